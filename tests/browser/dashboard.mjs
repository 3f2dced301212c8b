// The hub dashboard in a real browser (headless Chromium through playwright-core; the
// browser is the system's, nothing is downloaded). Run by crates/reeve/tests/it/dashboard.rs
// against a hub with node n1 (service `web` running) online:
//
//   HUB_URL=https://127.0.0.1:PORT OPERATOR_TOKEN=… node tests/browser/dashboard.mjs
//
// Every step has a bounded wait and says what it waited for when it fails.
import { chromium } from 'playwright-core';

const HUB_URL = (process.env.HUB_URL || '').replace(/\/$/, '');
const TOKEN = process.env.OPERATOR_TOKEN || '';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const T = Number(process.env.STEP_TIMEOUT_MS || 20000);

if (!HUB_URL || !TOKEN) {
  console.error('set HUB_URL and OPERATOR_TOKEN');
  process.exit(2);
}
const origin = new URL(HUB_URL).origin;

let failed = false;
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--ignore-certificate-errors', '--no-first-run', '--disable-extensions'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();

// Nothing may leave the hub's origin; no script error; no CSP violation.
const foreign = [];
const problems = [];
page.on('request', (r) => {
  const u = r.url();
  if (u.startsWith('data:') || u.startsWith('blob:')) return;
  if (new URL(u).origin !== origin) foreign.push(`${r.method()} ${u}`);
});
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
});

async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed = true;
    console.error(`FAIL ${name}: ${e.message.split('\n').slice(0, 6).join('\n     ')}`);
    try {
      console.error(`     url: ${page.url()}`);
      console.error(`     page text:\n${(await page.locator('main').innerText({ timeout: 2000 })).slice(0, 3000)}`);
    } catch { /* nothing more to say */ }
    throw e;
  }
}

function expectEq(what, got, want) {
  if (got !== want) throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

// SCREENSHOT_DIR=/tmp/shots keeps a picture of each page (for looking at the design).
async function shot(name) {
  if (process.env.SCREENSHOT_DIR) await page.screenshot({ path: `${process.env.SCREENSHOT_DIR}/${name}.png`, fullPage: true });
}

const visible = (sel) => page.locator(sel).first().waitFor({ state: 'visible', timeout: T });

try {
  await step('the page and its assets carry the security headers', async () => {
    const res = await page.goto(`${HUB_URL}/`, { waitUntil: 'domcontentloaded', timeout: T });
    const want = {
      '/': 'text/html; charset=utf-8',
      '/ui/app.js': 'text/javascript; charset=utf-8',
      '/ui/app.css': 'text/css; charset=utf-8',
    };
    for (const [path, type] of Object.entries(want)) {
      const hd = path === '/' ? res.headers() : (await context.request.get(`${HUB_URL}${path}`)).headers();
      expectEq(`${path} content-type`, hd['content-type'], type);
      expectEq(`${path} cache-control`, hd['cache-control'], 'no-cache');
      expectEq(`${path} x-frame-options`, hd['x-frame-options'], 'DENY');
      expectEq(`${path} x-content-type-options`, hd['x-content-type-options'], 'nosniff');
      const csp = hd['content-security-policy'] || '';
      if (!csp.startsWith("default-src 'self'") || csp.includes('unsafe')) throw new Error(`${path} CSP: ${csp}`);
    }
  });

  await step('a wrong token is refused at login', async () => {
    await visible('#token');
    await page.getByLabel('Operator token').fill('not-a-real-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#login-msg .notice.error').filter({ hasText: 'refused' }).waitFor({ timeout: T });
    expectEq('stored token', await page.evaluate(() => sessionStorage.getItem('reeve.token')), null);
    await shot('login');
    if (await page.locator('#top').isVisible()) throw new Error('the navigation is shown without a login');
  });

  await step('log in and see n1 online in the fleet', async () => {
    await page.getByLabel('Operator token').fill(TOKEN);
    await page.getByRole('button', { name: 'Log in' }).click();
    await visible('#nodes-body tr[data-node="n1"] .badge[data-value="online"]');
    await page.locator('#live.on').waitFor({ timeout: T });
    const row = page.locator('#nodes-body tr[data-node="n1"]');
    const text = await row.innerText();
    if (!/1 \/ 1/.test(text)) throw new Error(`services running/total not shown: ${text}`);
    await shot('fleet');
  });

  await step('search narrows the fleet table', async () => {
    await page.getByLabel('Search nodes').fill('no-such-node');
    await page.locator('#nodes-body .empty-row').waitFor({ timeout: T });
    await page.getByLabel('Search nodes').fill('n1');
    await visible('#nodes-body tr[data-node="n1"]');
  });

  await step('open n1 and see service web running', async () => {
    await page.locator('#nodes-body tr[data-node="n1"] a').click();
    await page.waitForURL(/#\/node\/n1$/, { timeout: T });
    await visible('#services-body tr[data-service="web"] .badge[data-value="running"]');
    await visible('#node-events-body tr');
  });

  await step('Stop web: the state turns stopped and the event arrives, live', async () => {
    await page.evaluate(() => { window.__noReload = true; });
    const stoppedEvents = page.locator('#node-events-body tr[data-service="web"][data-kind="stopped"]');
    const before = await stoppedEvents.count();
    await page.getByRole('button', { name: 'Stop web', exact: true }).click();
    await visible('#services-body tr[data-service="web"] .badge[data-value="stopped"]');
    await page.locator('#services-body tr[data-service="web"] .result.ok').filter({ hasText: 'stop: ok' }).waitFor({ timeout: T });
    await page.waitForFunction(
      ([sel, n]) => document.querySelectorAll(sel).length > n,
      ['#node-events-body tr[data-service="web"][data-kind="stopped"]', before],
      { timeout: T },
    );
    expectEq('page not reloaded', await page.evaluate(() => window.__noReload), true);
  });

  await step('web started from elsewhere shows up live; Restart web replies', async () => {
    const res = await context.request.post(`${HUB_URL}/api/v1/nodes/n1/requests`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
      data: { method: 'service.start', args: { name: 'web' } },
    });
    expectEq('POST /api/v1/nodes/n1/requests', res.status(), 202);
    await visible('#services-body tr[data-service="web"] .badge[data-value="running"]');
    await visible('#node-events-body tr[data-service="web"][data-kind="running"].fresh');
    await shot('node');
    await page.getByRole('button', { name: 'Restart web', exact: true }).click();
    await page.locator('#services-body tr[data-service="web"] .result.ok').filter({ hasText: 'restart: ok' }).waitFor({ timeout: T });
    await visible('#services-body tr[data-service="web"] .badge[data-value="running"]');
    expectEq('page not reloaded', await page.evaluate(() => window.__noReload), true);
  });

  await step('the send form sends ops.ps to n1 and shows the result', async () => {
    await page.getByRole('link', { name: 'Send', exact: true }).click();
    await page.getByLabel('Node', { exact: true }).fill('n1');
    await page.getByLabel('Method', { exact: true }).fill('ops.ps');
    await page.getByLabel('Arguments (JSON object)').fill('{}');
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    await visible('#send-result .badge[data-value="replied"]');
    await visible('#send-result .badge[data-value="ok"]');
    await visible('#send-result tr[data-service="web"] .badge[data-value="running"]');
    await shot('send');
  });

  await step('the send form shows a refusal (exec is off by default)', async () => {
    await page.getByLabel('Method', { exact: true }).fill('exec');
    await page.getByLabel('Arguments (JSON object)').fill('{"argv": ["true"]}');
    await page.getByRole('button', { name: 'Send', exact: true }).click();
    await visible('#send-result .badge[data-value="refused"]');
  });

  await step('the events timeline filters by node and kind', async () => {
    await page.goto(`${HUB_URL}/#/events?node=n1&kind=stopped`, { timeout: T });
    await visible('#events-body tr[data-kind="stopped"][data-service="web"]');
    const kinds = await page.locator('#events-body tr').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
    if (kinds.some((k) => k !== 'stopped')) throw new Error(`unfiltered kinds: ${kinds}`);
    await page.goto(`${HUB_URL}/#/events`, { timeout: T });
    await visible('#events-body tr[data-kind="running"]');
    await shot('events');
  });

  await step('messages and errors pages list what happened', async () => {
    await page.getByRole('link', { name: 'Messages' }).click();
    await visible('#messages-body tr td.mono:text-is("service.stop")');
    await page.locator('#messages-body tr').filter({ hasText: 'ops.ps' }).locator('.badge[data-value="replied"]').first().waitFor({ timeout: T });
    await shot('messages');
    await page.getByRole('link', { name: 'Errors' }).click();
    await visible('#errors-body tr');
    await shot('errors');
  });

  await step('log out forgets the token', async () => {
    await page.getByRole('button', { name: 'Log out' }).click();
    await visible('#token');
    expectEq('stored token', await page.evaluate(() => sessionStorage.getItem('reeve.token')), null);
  });

  await step('no request left the hub, no script error, no CSP violation', async () => {
    if (foreign.length) throw new Error(`requests to other origins:\n${foreign.join('\n')}`);
    if (problems.length) throw new Error(problems.join('\n'));
  });
} catch {
  failed = true;
} finally {
  await browser.close();
}

if (failed) {
  console.error('dashboard browser test failed');
  process.exit(1);
}
console.log('dashboard browser test passed');
