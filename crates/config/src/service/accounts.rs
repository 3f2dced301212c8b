//! Users and groups, read from `/etc/passwd` and `/etc/group` (no NSS, no side effects).

use super::raw::Scalar;

/// The account databases, as far as service files need them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Accounts {
    /// `(name, uid, primary gid)`.
    users: Vec<(String, u32, u32)>,
    /// `(name, gid)`.
    groups: Vec<(String, u32)>,
}

impl Accounts {
    /// Reads the system's files; a missing or unreadable file counts as empty.
    pub(crate) fn system() -> Self {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Self::parse(&passwd, &group)
    }

    /// Parses the text of `passwd(5)` and `group(5)` files.
    pub(crate) fn parse(passwd: &str, group: &str) -> Self {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some((
                    (*f.first()?).to_owned(),
                    f.get(2)?.parse().ok()?,
                    f.get(3)?.parse().ok()?,
                ))
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Some(((*f.first()?).to_owned(), f.get(2)?.parse().ok()?))
            })
            .collect();
        Self { users, groups }
    }

    /// Resolves `user` (a name or a uid) and `group` (a name or a gid) to ids. A user without a
    /// group gets the user's primary group. Errors are `(field, reason)`.
    pub(crate) fn resolve(
        &self,
        user: Option<&Scalar>,
        group: Option<&Scalar>,
        user_field: &str,
        group_field: &str,
    ) -> (Option<u32>, Option<u32>, Vec<(String, String)>) {
        let mut errors = Vec::new();
        let mut uid = None;
        let mut primary = None;
        if let Some(u) = user {
            match self.user(u) {
                Ok((id, gid)) => {
                    uid = Some(id);
                    primary = gid;
                }
                Err(e) => errors.push((user_field.to_owned(), e)),
            }
        }
        let gid = match group {
            Some(g) => match self.group(g) {
                Ok(id) => Some(id),
                Err(e) => {
                    errors.push((group_field.to_owned(), e));
                    None
                }
            },
            None => {
                if let (Some(id), None) = (uid, primary) {
                    errors.push((
                        user_field.to_owned(),
                        format!(
                            "uid {id} has no entry in /etc/passwd, so its primary group is \
                             unknown; set `group` too"
                        ),
                    ));
                }
                primary
            }
        };
        (uid, gid, errors)
    }

    /// A user's uid and, if known, primary gid. A numeric uid need not exist.
    fn user(&self, u: &Scalar) -> Result<(u32, Option<u32>), String> {
        match id_or_name(u, "user")? {
            IdOrName::Id(id) => Ok((id, self.users.iter().find(|x| x.1 == id).map(|x| x.2))),
            IdOrName::Name(name) => self
                .users
                .iter()
                .find(|x| x.0 == name)
                .map(|x| (x.1, Some(x.2)))
                .ok_or_else(|| format!("no user named `{name}` in /etc/passwd")),
        }
    }

    fn group(&self, g: &Scalar) -> Result<u32, String> {
        match id_or_name(g, "group")? {
            IdOrName::Id(id) => Ok(id),
            IdOrName::Name(name) => self
                .groups
                .iter()
                .find(|x| x.0 == name)
                .map(|x| x.1)
                .ok_or_else(|| format!("no group named `{name}` in /etc/group")),
        }
    }
}

enum IdOrName {
    Id(u32),
    Name(String),
}

fn id_or_name(v: &Scalar, what: &str) -> Result<IdOrName, String> {
    let id = |n: i64| u32::try_from(n).map_err(|_| format!("{what} id {n} is out of range"));
    match v {
        Scalar::Int(n) => id(*n).map(IdOrName::Id),
        Scalar::Float(f) => Err(format!("{what} must be a name or a whole number, not {f}")),
        Scalar::Str(s) if s.is_empty() => Err(format!("{what} must not be empty")),
        Scalar::Str(s) => match s.parse::<i64>() {
            Ok(n) => id(n).map(IdOrName::Id),
            Err(_) => Ok(IdOrName::Name(s.clone())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts {
        Accounts::parse(
            "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\nbroken\n",
            "root:x:0:\nwww:x:1001:\nlogs:x:1002:web\n",
        )
    }

    fn s(v: &str) -> Scalar {
        Scalar::Str(v.to_owned())
    }

    #[test]
    fn names_and_ids() {
        let a = accounts();
        assert_eq!(
            a.resolve(Some(&s("web")), None, "user", "group"),
            (Some(1000), Some(1001), vec![])
        );
        assert_eq!(
            a.resolve(Some(&s("web")), Some(&s("logs")), "user", "group"),
            (Some(1000), Some(1002), vec![])
        );
        assert_eq!(
            a.resolve(Some(&Scalar::Int(0)), None, "SetUID", "SetGID"),
            (Some(0), Some(0), vec![])
        );
        assert_eq!(
            a.resolve(Some(&s("4242")), Some(&Scalar::Int(7)), "user", "group"),
            (Some(4242), Some(7), vec![])
        );
        assert_eq!(
            a.resolve(None, Some(&s("www")), "user", "group"),
            (None, Some(1001), vec![])
        );
    }

    #[test]
    fn unknown_names_and_bad_ids() {
        let a = accounts();
        let (_, _, e) = a.resolve(Some(&s("nobody2")), Some(&s("nogroup2")), "user", "group");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, "user");
        assert_eq!(e[1].0, "group");
        let (_, _, e) = a.resolve(Some(&Scalar::Int(4242)), None, "user", "group");
        assert_eq!(e.len(), 1);
        let (_, _, e) = a.resolve(Some(&Scalar::Int(-1)), Some(&Scalar::Float(1.5)), "u", "g");
        assert_eq!(e.len(), 2);
    }
}
