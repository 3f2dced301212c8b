// reeve hub dashboard: a single page talking to /api/v1 with the operator's bearer token.
// No framework, no build step, nothing from other origins. Every piece of data reaches the
// page through textContent / DOM APIs, never parsed as HTML.
'use strict';

(() => {
  const TOKEN_KEY = 'reeve.token';
  const PAGE_SIZE = 100;
  const LIST_LIMIT = 200;
  const MAX_LIVE_ROWS = 500;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    skew: 0, // hub clock minus local clock, ms
    health: null,
  };

  // ---------------------------------------------------------------- DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);

  /** Builds an element. Children: nodes, strings (as text), arrays, null/false (skipped). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value' || k === 'checked' || k === 'selected') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const enc = encodeURIComponent;

  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
    }
    const s = p.toString();
    return s ? `?${s}` : '';
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  function toast(text, isError) {
    const t = $('#toast');
    t.className = isError ? 'toast error' : 'toast';
    t.textContent = text;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.textContent = ''; }, 6000);
  }

  // ---------------------------------------------------------------- time

  const hubNow = () => Date.now() + state.skew;

  function rel(ms) {
    if (!ms) return 'never';
    const d = Math.round((hubNow() - ms) / 1000);
    const abs = Math.abs(d);
    let s;
    if (abs < 5) return 'just now';
    if (abs < 60) s = `${abs} s`;
    else if (abs < 3600) s = `${Math.floor(abs / 60)} min`;
    else if (abs < 86400) s = `${Math.floor(abs / 3600)} h`;
    else s = `${Math.floor(abs / 86400)} d`;
    return d >= 0 ? `${s} ago` : `in ${s}`;
  }

  function fmt(ms) {
    if (!ms) return '—';
    const d = new Date(ms);
    const today = new Date();
    return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
  }

  /** A <time> showing a relative time (kept fresh), the exact time in its title. */
  function ago(ms) {
    if (!ms) return h('span', { class: 'sub' }, 'never');
    return h('time', { datetime: new Date(ms).toISOString(), title: new Date(ms).toLocaleString(), dataset: { ts: ms } }, rel(ms));
  }

  /** A <time> showing the local time, relative in its title. */
  function at(ms) {
    if (!ms) return h('span', { class: 'sub' }, '—');
    return h('time', { datetime: new Date(ms).toISOString(), title: rel(ms) }, fmt(ms));
  }

  setInterval(() => {
    for (const t of document.querySelectorAll('time[data-ts]')) t.textContent = rel(Number(t.dataset.ts));
  }, 5000);

  // ---------------------------------------------------------------- badges

  const TONE = {
    online: 'ok', running: 'ok', healthy: 'ok', replied: 'ok', ok: 'ok', agent_started: 'ok',
    starting: 'info', stopping: 'info', accepted: 'info', delivered: 'info', action: 'info', message: 'info',
    module: 'info', config_changed: 'info', buddy_attached: 'info',
    backing_off: 'warn', unhealthy: 'warn', exited: 'warn', killed: 'warn', signalled: 'warn',
    disagreement: 'warn', log_dropped: 'warn', agent_stopped: 'warn',
    failed: 'bad', spawn_failed: 'bad', expired: 'bad', error: 'bad', refused: 'bad',
    buddy_lost: 'bad', config_invalid: 'bad',
  };

  function badge(text, tone) {
    const t = String(text ?? 'unknown');
    return h('span', { class: `badge ${tone ?? TONE[t] ?? ''}`.trim(), dataset: { value: t } }, t.replace(/_/g, ' '));
  }

  const EVENT_KINDS = [
    'starting', 'running', 'healthy', 'unhealthy', 'exited', 'spawn_failed', 'backing_off', 'failed',
    'stopping', 'killed', 'stopped', 'signalled', 'action', 'config_changed', 'config_invalid',
    'buddy_attached', 'buddy_lost', 'disagreement', 'log_dropped', 'agent_started', 'agent_stopped', 'agent_update',
    'module', 'message',
  ];

  /** The service state an event kind implies (undefined: no change). */
  const EVENT_STATE = {
    starting: 'starting', running: 'running', healthy: 'running', unhealthy: 'unhealthy',
    backing_off: 'backing_off', failed: 'failed', spawn_failed: 'failed', stopping: 'stopping',
    stopped: 'stopped',
  };

  const METHODS = [
    'ops.ps', 'service.status', 'service.start', 'service.stop', 'service.restart', 'service.reload',
    'service.action', 'events.query', 'exec',
  ];

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { method = 'GET', body, signal, token = state.token } = {}) {
    const headers = { Accept: 'application/json', Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, {
        method, headers, signal, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, `the hub did not answer (${e.message})`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : `HTTP ${res.status} ${res.statusText}`;
      if (res.status === 401 && token === state.token && state.token) {
        expire(`The hub no longer accepts this token: ${msg}`);
      }
      throw new ApiError(res.status, msg);
    }
    return data;
  }

  /** Long-polls a message until it is replied or expired; `onState` sees every answer. */
  async function waitReply(id, signal, onState) {
    for (;;) {
      const m = await api(`/api/v1/messages/${enc(id)}?wait=25`, { signal });
      onState?.(m);
      if (m.state === 'replied' || m.state === 'expired') return m;
    }
  }

  /** Sends one request to `node` (signed by the hub for the operator); returns the message id. */
  async function sendRequest(node, method, args, signal, timeoutMs) {
    const body = { method, args };
    if (timeoutMs) body.method_timeout_ms = timeoutMs;
    const r = await api(`/api/v1/nodes/${enc(node)}/requests`, { method: 'POST', body, signal });
    const id = r?.id ?? r?.accepted?.[0]?.id;
    if (!id) throw new ApiError(0, 'the hub accepted the request but named no message id');
    return id;
  }

  // ---------------------------------------------------------------- live stream (SSE over fetch)

  const live = { listeners: new Set(), ac: null, connected: false, everConnected: false };

  function setLive(kind, text) {
    const el = $('#live');
    el.className = `live ${kind}`;
    el.textContent = text;
  }

  function emit(type, data) {
    for (const fn of [...live.listeners]) {
      try { fn(type, data); } catch (e) { console.error(e); }
    }
  }

  function startLive() {
    stopLive();
    live.ac = new AbortController();
    streamLoop(live.ac.signal);
  }

  function stopLive() {
    live.ac?.abort();
    live.ac = null;
    live.connected = false;
    live.everConnected = false;
  }

  async function streamLoop(signal) {
    let delay = 1000;
    while (!signal.aborted) {
      try {
        const res = await fetch('/api/v1/stream', {
          headers: { Accept: 'text/event-stream', Authorization: `Bearer ${state.token}` },
          signal, cache: 'no-store', credentials: 'omit',
        });
        if (res.status === 401) {
          expire('The hub no longer accepts this token.');
          return;
        }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        live.connected = true;
        setLive('on', 'live');
        delay = 1000;
        if (live.everConnected) emit('change', {}); // catch up on what was missed
        live.everConnected = true;
        await readSse(res.body, signal);
        throw new Error('the stream ended');
      } catch (e) {
        if (signal.aborted) return;
        live.connected = false;
        setLive('off', 'reconnecting…');
        console.warn('live stream:', e.message);
        await sleep(delay, signal);
        delay = Math.min(delay * 2, 30000);
      }
    }
  }

  async function readSse(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
    let buf = '';
    let event = '';
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length) dispatch(event || 'message', data.join('\n'));
          event = '';
          data = [];
        } else if (!line.startsWith(':')) {
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          let val = i < 0 ? '' : line.slice(i + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') event = val;
          else if (field === 'data') data.push(val);
        }
      }
    }
  }

  function dispatch(type, raw) {
    let data;
    try { data = JSON.parse(raw); } catch { return; }
    emit(type, data);
  }

  // While the stream is down, pages still refresh now and then.
  setInterval(() => {
    if (state.token && live.ac && !live.connected) emit('change', {});
  }, 15000);

  /** Calls `fn(event)` for each node event while the page is shown. */
  function onEvent(ctx, fn) {
    const l = (type, data) => { if (type === 'node_event' && data && typeof data === 'object') fn(data); };
    live.listeners.add(l);
    ctx.cleanups.push(() => live.listeners.delete(l));
  }

  /** Calls async `fn` (debounced, never twice at once) when fleet state changed. */
  function onChange(ctx, fn, ms = 800) {
    let timer = null;
    let running = false;
    let again = false;
    const run = async () => {
      timer = null;
      if (ctx.signal.aborted) return;
      if (running) { again = true; return; }
      running = true;
      try { await fn(); } catch (e) { if (e.name !== 'AbortError') console.warn(e); }
      running = false;
      if (again) { again = false; run(); }
    };
    const l = (type) => { if (type === 'change' && !timer) timer = setTimeout(run, ms); };
    live.listeners.add(l);
    ctx.cleanups.push(() => { live.listeners.delete(l); clearTimeout(timer); });
  }

  // ---------------------------------------------------------------- routing

  let current = null;

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const q = raw.indexOf('?');
    const path = q < 0 ? raw : raw.slice(0, q);
    const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
    const parts = path.split('/').filter(Boolean).map((p) => {
      try { return decodeURIComponent(p); } catch { return p; }
    });
    return { parts, params };
  }

  function hashFor(parts, params) {
    const q = params ? qs(params) : '';
    return `#/${parts.map(enc).join('/')}${q}`;
  }

  function leave() {
    if (!current) return;
    current.ac.abort();
    for (const f of current.cleanups) f();
    current = null;
  }

  const TITLES = { nodes: 'Fleet', node: 'Node', events: 'Events', messages: 'Messages', errors: 'Errors', send: 'Send' };

  function route() {
    leave();
    const main = $('#main');
    if (!state.token) {
      $('#top').hidden = true;
      renderLogin(main);
      return;
    }
    $('#top').hidden = false;
    const { parts, params } = parseHash();
    const page = PAGES[parts[0]] ? parts[0] : 'nodes';
    const ac = new AbortController();
    const ctx = { ac, signal: ac.signal, cleanups: [], parts, params };
    current = ctx;
    for (const a of document.querySelectorAll('[data-nav]')) {
      const on = a.dataset.nav === page || (page === 'node' && a.dataset.nav === 'nodes');
      if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    document.title = `${page === 'node' && parts[1] ? parts[1] : TITLES[page]} · reeve hub`;
    main.replaceChildren();
    PAGES[page](ctx, main).catch((e) => {
      if (e.name === 'AbortError' || ctx.signal.aborted) return;
      main.append(errorBox(e));
    });
  }

  function errorBox(e) {
    return h('p', { class: 'notice error', role: 'alert' }, e.message || String(e));
  }

  // ---------------------------------------------------------------- login

  async function loadHealth() {
    try {
      const res = await fetch('/api/v1/health', { cache: 'no-store', credentials: 'omit' });
      const hl = await res.json();
      state.health = hl;
      if (typeof hl.hub_time_ms === 'number') state.skew = hl.hub_time_ms - Date.now();
      return hl;
    } catch {
      return null;
    }
  }

  function renderLogin(main, notice) {
    const input = h('input', {
      id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'off',
      spellcheck: 'false', 'aria-describedby': 'token-hint',
    });
    const msg = h('div', { id: 'login-msg', role: 'alert' });
    if (notice) msg.append(h('p', { class: 'notice error' }, notice));
    const button = h('button', { type: 'submit' }, 'Log in');
    const about = h('p', { class: 'hint' });
    const form = h('form', { class: 'panel', 'aria-labelledby': 'login-title' },
      h('div', { class: 'field' },
        h('label', { for: 'token' }, 'Operator token'),
        input,
        h('p', { class: 'hint', id: 'token-hint' }, 'Made by ', h('code', {}, 'reeve hub operator add'),
          '. Kept in this tab only (session storage) until you log out or close it.')),
      button, msg, about);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      button.disabled = true;
      msg.replaceChildren(h('p', { class: 'notice' }, 'Checking the token…'));
      try {
        await api('/api/v1/nodes?limit=1', { token });
        state.token = token;
        sessionStorage.setItem(TOKEN_KEY, token);
        startLive();
        const target = !location.hash || location.hash === '#/' ? '#/nodes' : location.hash;
        if (location.hash !== target) location.hash = target; // hashchange routes
        else route();
      } catch (e) {
        const text = e.status === 401 ? `The hub refused this token: ${e.message}.` : `Could not log in: ${e.message}`;
        msg.replaceChildren(h('p', { class: 'notice error' }, text));
        button.disabled = false;
        input.select();
      }
    });
    main.replaceChildren(h('section', { class: 'login' },
      h('h1', { id: 'login-title' }, h('img', { src: '/ui/icon.svg', alt: '', width: 28, height: 28 }), 'reeve hub'),
      form));
    document.title = 'Log in · reeve hub';
    input.focus();
    loadHealth().then((hl) => {
      if (!hl) return;
      about.replaceChildren('Hub ', h('strong', {}, `reeve ${hl.version}`), ', key fingerprint ',
        h('code', {}, hl.hub_fingerprint), '. It should match the one your join tokens name.');
    });
  }

  function expire(notice) {
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    stopLive();
    leave();
    $('#top').hidden = true;
    renderLogin($('#main'), notice);
  }

  // ---------------------------------------------------------------- fleet

  function table(caption, headers, tbody) {
    return h('div', { class: 'table-wrap' },
      h('table', {},
        h('caption', { class: 'sr-only' }, caption),
        h('thead', {}, h('tr', {}, headers.map((c) => {
          const [label, cls] = Array.isArray(c) ? c : [c];
          return h('th', { scope: 'col', class: cls }, label);
        }))),
        tbody));
  }

  function emptyRow(cols, text) {
    return h('tr', { class: 'empty-row' }, h('td', { colspan: cols, class: 'empty' }, text));
  }

  function factsOf(n) {
    return n && n.facts && typeof n.facts === 'object' ? n.facts : {};
  }

  function onlineBadge(n) {
    return badge(n.online ? 'online' : 'offline');
  }

  async function pageNodes(ctx, main) {
    let search = ctx.params.get('search') || '';
    let page = Math.max(0, Number.parseInt(ctx.params.get('page') || '1', 10) - 1 || 0);
    const tbody = h('tbody', { id: 'nodes-body' });
    const status = h('span', { class: 'sub', 'aria-live': 'polite' });
    const prev = h('button', { type: 'button', class: 'secondary small' }, '← Previous');
    const next = h('button', { type: 'button', class: 'secondary small' }, 'Next →');
    const input = h('input', { id: 'node-search', type: 'search', value: search, placeholder: 'name contains…', autocomplete: 'off' });

    main.append(
      h('h1', {}, 'Fleet'),
      h('div', { class: 'toolbar' },
        h('div', { class: 'grow' }, h('label', { for: 'node-search' }, 'Search nodes'), input)),
      table('Nodes', ['Node', 'Status', 'Last seen', 'Agent', ['Services', 'num'], 'Host'], tbody),
      h('div', { class: 'pager' }, prev, next, status));

    const syncHash = () => history.replaceState(null, '', hashFor(['nodes'], { search, page: page ? page + 1 : '' }));

    let seq = 0;
    const load = async () => {
      const mine = ++seq;
      const list = await api(`/api/v1/nodes${qs({ search, offset: page * PAGE_SIZE, limit: PAGE_SIZE + 1 })}`, { signal: ctx.signal });
      if (mine !== seq) return;
      const more = list.length > PAGE_SIZE;
      const rows = list.slice(0, PAGE_SIZE);
      tbody.replaceChildren(...(rows.length ? rows.map(nodeRow) : [emptyRow(6, search ? `No node name contains “${search}”.` : 'No nodes have joined yet. Make a join token with reeve hub token create.')]));
      const first = page * PAGE_SIZE;
      status.textContent = rows.length ? `Nodes ${first + 1}–${first + rows.length}${more ? '' : ' (last page)'}` : '';
      prev.disabled = page === 0;
      next.disabled = !more;
    };

    let timer;
    input.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        search = input.value.trim();
        page = 0;
        syncHash();
        load().catch(showLoadError);
      }, 250);
    });
    ctx.cleanups.push(() => clearTimeout(timer));
    prev.addEventListener('click', () => { page = Math.max(0, page - 1); syncHash(); load().catch(showLoadError); });
    next.addEventListener('click', () => { page += 1; syncHash(); load().catch(showLoadError); });
    onChange(ctx, load, 1000);
    await load();
  }

  function showLoadError(e) {
    if (e.name !== 'AbortError') toast(e.message, true);
  }

  function nodeRow(n) {
    const f = factsOf(n);
    const total = typeof f.services === 'number' ? f.services : null;
    const running = typeof f.services_running === 'number' ? f.services_running : null;
    const svc = total === null ? h('span', { class: 'sub' }, '—')
      : h('span', { class: running < total ? 'badge warn' : '' }, `${running ?? '?'} / ${total}`);
    const host = [f.hostname, f.os && f.arch ? `${f.os}/${f.arch}` : f.os].filter(Boolean).join(' · ');
    return h('tr', { dataset: { node: n.name } },
      h('td', {}, h('a', { href: hashFor(['node', n.name]) }, n.name)),
      h('td', { class: 'status' }, onlineBadge(n)),
      h('td', {}, n.online ? h('span', {}, 'connected') : ago(n.last_seen_ms)),
      h('td', {}, f.agent_version || h('span', { class: 'sub' }, '—')),
      h('td', { class: 'num' }, svc),
      h('td', { class: 'sub' }, host || '—'));
  }

  // ---------------------------------------------------------------- node detail

  async function pageNode(ctx, main) {
    const name = ctx.parts[1];
    if (!name) { location.hash = '#/nodes'; return; }
    const title = h('h1', {}, name);
    const factsBox = h('dl', { class: 'facts' });
    const svcBody = h('tbody', { id: 'services-body' });
    const evBody = h('tbody', { id: 'node-events-body' });
    const psResult = h('span', { class: 'result', 'aria-live': 'polite' });
    const refresh = h('button', { type: 'button', class: 'secondary small' }, 'Ask the node now');
    main.append(
      h('p', { class: 'sub' }, h('a', { href: '#/nodes' }, '← Fleet')),
      title,
      h('section', { class: 'panel', 'aria-label': 'Facts' }, factsBox),
      h('h2', { id: 'services-title' }, 'Services'),
      h('div', { class: 'toolbar' }, refresh, psResult,
        h('a', { href: hashFor(['send'], { node: name }), class: 'sub' }, 'Send another command…')),
      table(`Services of ${name}`, ['Service', 'State', ['Pid', 'num'], ['Restarts', 'num'], 'Control'], svcBody),
      h('h2', {}, 'Recent events'),
      table(`Recent events of ${name}`, ['Time', 'Service', 'Kind', 'Actor', 'Message'], evBody));

    // Service state: the node re-sends its facts (service states among them) right after
    // the events that changed them, so the facts are the truth. Live events and replies to
    // service requests are shown at once on top of them, until the next facts arrive.
    let node = null;
    let factsKey = null;
    const overlays = []; // {name, state?, pid?, restarts?, known?} in arrival order
    const rows = new Map(); // service name -> {tr, cells…}
    const events = [];

    const renderFacts = () => {
      const f = factsOf(node);
      const item = (k, ...v) => h('div', {}, h('dt', {}, k), h('dd', {}, ...v));
      title.replaceChildren(name, onlineBadge(node));
      factsBox.replaceChildren(
        item('Status', node.online ? 'connected' : h('span', {}, 'offline, last seen ', ago(node.last_seen_ms))),
        item('Host', f.hostname || '—'),
        item('System', [f.os, f.arch].filter(Boolean).join(' / ') || '—'),
        item('Agent', f.agent_version ? `reeve ${f.agent_version}` : '—'),
        item('Services', typeof f.services === 'number' ? `${f.services_running ?? '?'} running of ${f.services}` : '—'),
        item('Facts as of', !Object.keys(f).length ? 'not reported yet'
          : typeof node.facts_ms === 'number' ? ago(node.facts_ms)
            : node.online ? 'now (the node sends every change)'
              : h('span', {}, 'its last connection, ', ago(node.last_seen_ms))),
        item('Enrolled', at(node.enrolled_ms)),
        item('Key', h('code', { class: 'mono', title: node.key }, `${String(node.key).slice(0, 16)}…`)));
    };

    const serviceStates = () => {
      const m = new Map();
      const f = factsOf(node);
      for (const s of Array.isArray(f.service_states) ? f.service_states : []) {
        if (s && typeof s.name === 'string') m.set(s.name, { name: s.name, state: s.state, pid: s.pid ?? null, restarts: s.restarts ?? 0 });
      }
      for (const u of overlays) {
        let s = m.get(u.name);
        if (!s) {
          if (!u.known) continue; // only the node's own answers add a service
          s = { name: u.name, state: 'unknown', pid: null, restarts: 0 };
          m.set(u.name, s);
        }
        if (u.state) s.state = u.state;
        if (u.pid !== undefined) s.pid = u.pid;
        if (u.restarts !== undefined) s.restarts = u.restarts;
      }
      return m;
    };

    const renderServices = () => {
      const m = serviceStates();
      if (!m.size) {
        rows.clear();
        svcBody.replaceChildren(emptyRow(5, node.online || Object.keys(factsOf(node)).length ? 'No services reported.' : 'The node has not reported its services yet.'));
        return;
      }
      for (const k of [...rows.keys()]) if (!m.has(k)) { rows.get(k).tr.remove(); rows.delete(k); }
      if (!rows.size) svcBody.replaceChildren();
      for (const s of [...m.values()].sort((a, b) => a.name.localeCompare(b.name))) {
        let r = rows.get(s.name);
        if (!r) {
          r = serviceRow(s.name);
          rows.set(s.name, r);
          svcBody.append(r.tr);
        }
        const b = badge(s.state);
        r.state.replaceChildren(b);
        r.pid.textContent = s.pid ?? '—';
        r.restarts.textContent = s.restarts ?? 0;
      }
    };

    const serviceRow = (svc) => {
      const r = {
        state: h('td', { class: 'state' }), pid: h('td', { class: 'num mono' }), restarts: h('td', { class: 'num' }),
        result: h('div', { class: 'result', 'aria-live': 'polite' }),
      };
      const buttons = ['start', 'stop', 'restart'].map((verb) => {
        const label = verb[0].toUpperCase() + verb.slice(1);
        return h('button', {
          type: 'button', class: verb === 'stop' ? 'danger small' : 'secondary small',
          'aria-label': `${label} ${svc}`, dataset: { action: verb },
          onclick: () => control(svc, verb, r, buttons),
        }, label);
      });
      r.tr = h('tr', { dataset: { service: svc } },
        h('th', { scope: 'row' }, svc), r.state, r.pid, r.restarts,
        h('td', {}, h('div', { class: 'buttons' }, buttons), r.result));
      return r;
    };

    const control = async (svc, verb, r, buttons) => {
      for (const b of buttons) b.disabled = true;
      r.result.className = 'result wait';
      r.result.textContent = `${verb}: sending…`;
      try {
        const id = await sendRequest(name, `service.${verb}`, { name: svc }, ctx.signal);
        r.result.textContent = `${verb}: waiting for the node…`;
        const m = await waitReply(id, ctx.signal, (m) => {
          if (m.state === 'delivered') r.result.textContent = `${verb}: delivered, running…`;
        });
        showReply(r.result, verb, m);
        const s = m.reply?.service;
        if (m.state === 'replied' && s && typeof s === 'object') {
          overlays.push({ name: svc, state: s.state, pid: s.pid ?? null, restarts: s.restarts, known: true });
          renderServices();
        }
      } catch (e) {
        if (e.name === 'AbortError') return;
        r.result.className = 'result bad';
        r.result.textContent = `${verb}: ${e.message}`;
      } finally {
        for (const b of buttons) b.disabled = false;
      }
    };

    refresh.addEventListener('click', async () => {
      refresh.disabled = true;
      psResult.className = 'result wait';
      psResult.textContent = 'asking the node…';
      try {
        const id = await sendRequest(name, 'ops.ps', {}, ctx.signal);
        const m = await waitReply(id, ctx.signal);
        showReply(psResult, 'ops.ps', m);
        if (m.state === 'replied' && Array.isArray(m.reply?.services)) {
          for (const s of m.reply.services) {
            if (s && typeof s.name === 'string') overlays.push({ name: s.name, state: s.state, pid: s.pid ?? null, restarts: s.restarts, known: true });
          }
          renderServices();
        }
      } catch (e) {
        if (e.name === 'AbortError') return;
        psResult.className = 'result bad';
        psResult.textContent = e.message;
      } finally {
        refresh.disabled = false;
      }
    });

    const eventOverlay = (e) => {
      const st = EVENT_STATE[e.kind];
      if (!e.service || (!st && e.kind !== 'exited')) return null;
      const gone = e.kind === 'exited' || st === 'stopped' || st === 'failed' || st === 'backing_off';
      return { name: e.service, state: st, pid: gone ? null : undefined };
    };

    const addEvent = (e, fresh) => {
      const key = `${e.id}`;
      if (events.some((x) => `${x.id}` === key)) return;
      events.unshift(e);
      if (!fresh) return;
      const o = eventOverlay(e);
      if (o) overlays.push(o);
      evBody.querySelector('.empty-row')?.remove();
      evBody.prepend(eventRow(e, { fresh: true, node: false }));
      while (evBody.rows.length > MAX_LIVE_ROWS) evBody.lastElementChild.remove();
    };

    const loadNode = async () => {
      try {
        node = await api(`/api/v1/nodes/${enc(name)}`, { signal: ctx.signal });
      } catch (e) {
        if (e.status === 404) {
          main.replaceChildren(h('h1', {}, name), h('p', { class: 'notice error', role: 'alert' }, e.message),
            h('p', {}, h('a', { href: '#/nodes' }, 'Back to the fleet')));
          ctx.ac.abort();
        }
        throw e;
      }
      const key = JSON.stringify(factsOf(node).service_states ?? null);
      if (key !== factsKey) {
        factsKey = key;
        overlays.length = 0; // newer than everything shown so far
      }
      renderFacts();
      renderServices();
    };

    onEvent(ctx, (e) => {
      if (e.node !== name || !node) return;
      addEvent(e, true);
      renderServices();
    });
    onChange(ctx, loadNode, 600);

    await loadNode();
    try {
      const list = await api(`/api/v1/events${qs({ node: name, limit: 100 })}`, { signal: ctx.signal });
      for (const e of [...list].reverse()) addEvent(e, false);
      events.sort((a, b) => b.ts_ms - a.ts_ms || b.id - a.id);
      evBody.replaceChildren(...(events.length ? events.map((e) => eventRow(e, { node: false })) : [emptyRow(5, 'No events yet.')]));
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      evBody.replaceChildren(emptyRow(5, `Events are not available: ${e.message}`));
    }
  }

  function showReply(el, what, m) {
    if (m.state === 'expired') {
      el.className = 'result bad';
      el.textContent = `${what}: expired before the node replied`;
      return;
    }
    const r = m.reply || {};
    const ok = r.status === 'ok';
    el.className = ok ? 'result ok' : 'result bad';
    let text = `${what}: ${r.status ?? 'replied'}`;
    if (r.service?.state) text += ` — now ${String(r.service.state).replace(/_/g, ' ')}`;
    if (r.error) text += ` — ${r.error}`;
    if (m.replied_ms) text += ` (${fmt(m.replied_ms)})`;
    el.textContent = text;
  }

  function eventRow(e, { fresh = false, node = true } = {}) {
    return h('tr', { class: fresh ? 'fresh' : null, dataset: { kind: e.kind, service: e.service ?? '', event: e.id } },
      h('td', { class: 'mono' }, at(e.ts_ms)),
      node ? h('td', {}, h('a', { href: hashFor(['node', e.node]) }, e.node)) : null,
      h('td', {}, e.service ?? h('span', { class: 'sub' }, '—')),
      h('td', {}, badge(e.kind)),
      h('td', { class: 'sub' }, e.actor ?? ''),
      h('td', { class: 'msg' }, e.message ?? ''));
  }

  // ---------------------------------------------------------------- events timeline

  async function pageEvents(ctx, main) {
    const f = { node: ctx.params.get('node') || '', service: ctx.params.get('service') || '', kind: ctx.params.get('kind') || '' };
    const nodeIn = h('input', { id: 'ev-node', value: f.node, placeholder: 'any', autocomplete: 'off' });
    const svcIn = h('input', { id: 'ev-service', value: f.service, placeholder: 'any', autocomplete: 'off' });
    const kindIn = h('select', { id: 'ev-kind' }, h('option', { value: '' }, 'any'),
      EVENT_KINDS.map((k) => h('option', { value: k, selected: k === f.kind }, k.replace(/_/g, ' '))));
    const pause = h('input', { id: 'ev-pause', type: 'checkbox' });
    const tbody = h('tbody', { id: 'events-body' });
    const form = h('form', { class: 'toolbar', role: 'search', 'aria-label': 'Filter events' },
      h('div', {}, h('label', { for: 'ev-node' }, 'Node'), nodeIn),
      h('div', {}, h('label', { for: 'ev-service' }, 'Service'), svcIn),
      h('div', {}, h('label', { for: 'ev-kind' }, 'Kind'), kindIn),
      h('button', { type: 'submit' }, 'Filter'),
      h('div', { class: 'grow' }),
      h('div', {}, pause, ' ', h('label', { for: 'ev-pause', class: 'inline' }, 'Pause live updates')));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      location.hash = hashFor(['events'], { node: nodeIn.value.trim(), service: svcIn.value.trim(), kind: kindIn.value });
    });
    main.append(h('h1', {}, 'Events ', h('span', { class: 'sub' }, 'newest first, live')), form,
      table('Events', ['Time', 'Node', 'Service', 'Kind', 'Actor', 'Message'], tbody));

    const match = (e) => (!f.node || e.node === f.node) && (!f.service || e.service === f.service) && (!f.kind || e.kind === f.kind);
    const seen = new Set();
    const list = await api(`/api/v1/events${qs({ node: f.node, service: f.service, kind: f.kind, limit: LIST_LIMIT })}`, { signal: ctx.signal });
    const rows = list.filter(match);
    for (const e of rows) seen.add(`${e.node}/${e.id}`);
    tbody.replaceChildren(...(rows.length ? rows.map((e) => eventRow(e)) : [emptyRow(6, 'No events match.')]));
    onEvent(ctx, (e) => {
      if (pause.checked || !match(e) || seen.has(`${e.node}/${e.id}`)) return;
      seen.add(`${e.node}/${e.id}`);
      tbody.querySelector('.empty-row')?.remove();
      tbody.prepend(eventRow(e, { fresh: true }));
      while (tbody.rows.length > MAX_LIVE_ROWS) tbody.lastElementChild.remove();
    });
  }

  // ---------------------------------------------------------------- messages

  const MESSAGE_TABS = [
    ['all', 'All'], ['pending', 'Pending'], ['replied', 'Replied'], ['expired', 'Dead (expired)'],
  ];

  async function pageMessages(ctx, main) {
    const tab = MESSAGE_TABS.some(([k]) => k === ctx.params.get('state')) ? ctx.params.get('state') : 'all';
    const tbody = h('tbody', { id: 'messages-body' });
    main.append(
      h('h1', {}, 'Messages ', h('span', { class: 'sub' }, 'requests sent to nodes, newest first')),
      h('nav', { class: 'toolbar', 'aria-label': 'Message states' }, MESSAGE_TABS.map(([k, label]) =>
        h('a', { href: hashFor(['messages'], { state: k }), class: k === tab ? 'badge info' : 'badge', 'aria-current': k === tab ? 'page' : null }, label))),
      table('Messages', ['Created', 'Node', 'Method', 'Sender', 'State', 'Delivered', 'Replied', 'Reply'], tbody));

    const load = async () => {
      const states = tab === 'all' ? [''] : tab === 'pending' ? ['accepted', 'delivered'] : [tab];
      const lists = await Promise.all(states.map((s) => api(`/api/v1/messages${qs({ state: s, limit: LIST_LIMIT })}`, { signal: ctx.signal })));
      const list = lists.flat().sort((a, b) => b.created_ms - a.created_ms).slice(0, LIST_LIMIT);
      const open = new Set([...tbody.querySelectorAll('details[open]')].map((d) => d.dataset.id));
      tbody.replaceChildren(...(list.length ? list.map((m) => messageRow(m, open.has(m.id))) : [emptyRow(8, 'No messages.')]));
    };
    onChange(ctx, load, 1000);
    await load();
  }

  function messageRow(m, open) {
    const r = m.reply;
    let reply = h('span', { class: 'sub' }, '—');
    if (r !== null && r !== undefined) {
      const summary = [r.status ? badge(r.status) : 'reply', r.error ? ` ${r.error}` : ''];
      reply = h('details', { dataset: { id: m.id }, open: open || null },
        h('summary', {}, summary),
        h('pre', { class: 'json' }, JSON.stringify(r, null, 2)));
    }
    return h('tr', { dataset: { message: m.id } },
      h('td', { class: 'mono', title: m.id }, at(m.created_ms)),
      h('td', {}, h('a', { href: hashFor(['node', m.node]) }, m.node)),
      h('td', { class: 'mono' }, m.method),
      h('td', {}, m.sender),
      h('td', {}, badge(m.state)),
      h('td', {}, at(m.delivered_ms)),
      h('td', {}, at(m.replied_ms)),
      h('td', { class: 'msg' }, reply));
  }

  // ---------------------------------------------------------------- errors

  async function pageErrors(ctx, main) {
    const tbody = h('tbody', { id: 'errors-body' });
    main.append(h('h1', {}, 'Errors ', h('span', { class: 'sub' }, 'the hub’s error log, newest first')),
      table('Errors', ['Time', 'Node', 'Kind', 'Message'], tbody));
    const load = async () => {
      const list = await api(`/api/v1/errors${qs({ limit: LIST_LIMIT })}`, { signal: ctx.signal });
      tbody.replaceChildren(...(list.length ? list.map((e) => h('tr', { dataset: { error: e.id } },
        h('td', { class: 'mono' }, at(e.at_ms)),
        h('td', {}, e.node ? h('a', { href: hashFor(['node', e.node]) }, e.node) : h('span', { class: 'sub' }, 'hub')),
        h('td', {}, badge(e.kind, 'bad')),
        h('td', { class: 'msg' }, e.message))) : [emptyRow(4, 'No errors recorded.')]));
    };
    onChange(ctx, load, 1500);
    await load();
  }

  // ---------------------------------------------------------------- send

  const PRESETS = {
    'ops.ps': {}, 'service.status': { name: '' }, 'service.start': { name: '' }, 'service.stop': { name: '' },
    'service.restart': { name: '' }, 'service.reload': { name: '' }, 'service.action': { name: '', action: '' },
    'events.query': { limit: 20 }, exec: { argv: ['uname', '-a'] },
  };

  async function pageSend(ctx, main) {
    const nodeIn = h('input', { id: 'send-node', required: true, value: ctx.params.get('node') || '', list: 'send-node-list', autocomplete: 'off' });
    const nodeList = h('datalist', { id: 'send-node-list' });
    const methodIn = h('input', { id: 'send-method', required: true, value: ctx.params.get('method') || 'ops.ps', list: 'send-method-list', autocomplete: 'off' });
    const methodList = h('datalist', { id: 'send-method-list' }, METHODS.map((m) => h('option', { value: m })));
    const argsIn = h('textarea', { id: 'send-args', spellcheck: 'false', 'aria-describedby': 'send-args-hint' }, '{}');
    const timeoutIn = h('input', { id: 'send-timeout', type: 'number', min: 1, step: 1, placeholder: 'the node’s default' });
    const button = h('button', { type: 'submit' }, 'Send');
    const result = h('section', { id: 'send-result', 'aria-live': 'polite', 'aria-label': 'Result' });

    let lastPreset = '{}';
    methodIn.addEventListener('input', () => {
      const p = PRESETS[methodIn.value.trim()];
      if (p && argsIn.value.trim() === lastPreset.trim()) {
        lastPreset = JSON.stringify(p, null, 2);
        argsIn.value = lastPreset;
      }
    });
    let timer;
    nodeIn.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        try {
          const list = await api(`/api/v1/nodes${qs({ search: nodeIn.value.trim(), limit: 20 })}`, { signal: ctx.signal });
          nodeList.replaceChildren(...list.map((n) => h('option', { value: n.name }, n.online ? 'online' : 'offline')));
        } catch { /* suggestions only */ }
      }, 250);
    });
    ctx.cleanups.push(() => clearTimeout(timer));

    const form = h('form', { class: 'panel', 'aria-label': 'Send a request' },
      h('div', { class: 'two' },
        h('div', { class: 'field' }, h('label', { for: 'send-node' }, 'Node'), nodeIn, nodeList),
        h('div', { class: 'field' }, h('label', { for: 'send-method' }, 'Method'), methodIn, methodList)),
      h('div', { class: 'field' }, h('label', { for: 'send-args' }, 'Arguments (JSON object)'), argsIn,
        h('p', { class: 'hint', id: 'send-args-hint' }, 'The hub signs the request for you; the node’s policy decides whether it runs. ',
          h('code', {}, 'exec'), ' is refused unless the node’s policy allows it.')),
      h('div', { class: 'field' }, h('label', { for: 'send-timeout' }, 'Method time limit (ms, optional)'), timeoutIn),
      button);

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      let args;
      try {
        args = JSON.parse(argsIn.value.trim() || '{}');
        if (!args || typeof args !== 'object' || Array.isArray(args)) throw new Error('the arguments must be a JSON object');
      } catch (e) {
        result.replaceChildren(h('p', { class: 'notice error', role: 'alert' }, `Arguments: ${e.message}`));
        argsIn.focus();
        return;
      }
      const node = nodeIn.value.trim();
      const method = methodIn.value.trim();
      const timeout = timeoutIn.value ? Number(timeoutIn.value) : undefined;
      button.disabled = true;
      const stateLine = h('p', { class: 'notice', id: 'send-state' }, `Sending ${method} to ${node}…`);
      result.replaceChildren(h('h2', {}, 'Result'), stateLine);
      try {
        const id = await sendRequest(node, method, args, ctx.signal, timeout);
        stateLine.replaceChildren('Message ', h('code', {}, id), ' accepted; waiting for the reply…');
        const m = await waitReply(id, ctx.signal, (m) => {
          if (m.state === 'delivered') stateLine.replaceChildren('Message ', h('code', {}, id), ' delivered; the node is working on it…');
        });
        result.replaceChildren(h('h2', {}, 'Result'), replyView(m));
      } catch (e) {
        if (e.name === 'AbortError') return;
        result.replaceChildren(h('h2', {}, 'Result'), h('p', { class: 'notice error', role: 'alert' }, e.message));
      } finally {
        button.disabled = false;
      }
    });

    main.append(h('h1', {}, 'Send a request'), form, result);
    (nodeIn.value ? methodIn : nodeIn).focus();
  }

  function replyView(m) {
    const r = m.reply;
    const head = h('p', { class: 'line' }, h('span', {}, 'Message ', h('code', {}, m.id), ' to ', h('a', { href: hashFor(['node', m.node]) }, m.node)),
      badge(m.state), r?.status ? badge(r.status) : null,
      m.replied_ms ? h('span', { class: 'sub' }, `replied ${fmt(m.replied_ms)}`) : null);
    const parts = [head];
    if (m.state === 'expired') parts.push(h('p', { class: 'notice error' }, 'The message expired before the node replied.'));
    if (r?.error) parts.push(h('p', { class: 'notice error' }, r.error));
    if (Array.isArray(r?.services)) {
      parts.push(table('Services', ['Service', 'State', ['Pid', 'num'], ['Restarts', 'num']],
        h('tbody', {}, r.services.map((s) => h('tr', { dataset: { service: s.name } },
          h('th', { scope: 'row' }, s.name), h('td', {}, badge(s.state)), h('td', { class: 'num mono' }, s.pid ?? '—'),
          h('td', { class: 'num' }, s.restarts ?? 0))))));
    }
    if (typeof r?.stdout === 'string' && r.stdout) parts.push(h('h3', {}, 'stdout'), h('pre', { class: 'json' }, r.stdout));
    if (typeof r?.stderr === 'string' && r.stderr) parts.push(h('h3', {}, 'stderr'), h('pre', { class: 'json' }, r.stderr));
    if (r !== null && r !== undefined) {
      parts.push(h('details', {}, h('summary', {}, 'Full reply (JSON)'), h('pre', { class: 'json', id: 'send-reply-json' }, JSON.stringify(r, null, 2))));
    }
    return h('div', { class: 'panel' }, parts);
  }

  const PAGES = { nodes: pageNodes, node: pageNode, events: pageEvents, messages: pageMessages, errors: pageErrors, send: pageSend };

  // ---------------------------------------------------------------- start

  $('#logout').addEventListener('click', () => {
    state.token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    stopLive();
    route();
  });
  window.addEventListener('hashchange', () => {
    route();
    $('#main').focus({ preventScroll: true });
  });
  loadHealth();
  if (state.token) startLive();
  route();
})();
