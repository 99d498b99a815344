//! Where a region stores its data: the `database` setting (or `geosaga region --database`),
//! read the way `geosaga serve --database` reads its own.

use std::path::PathBuf;

/// Where a region stores its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL.
    Postgres(String),
}

impl Storage {
    /// Reads a `database` setting: a `postgres://` or `postgresql://` URL, `sqlite://PATH`,
    /// or a path.
    pub fn parse(database: &str) -> std::result::Result<Storage, String> {
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            Ok(Storage::Postgres(database.to_owned()))
        } else if let Some(path) = database.strip_prefix("sqlite://") {
            Ok(Storage::Sqlite(PathBuf::from(path)))
        } else if database.is_empty() || database.contains("://") {
            Err(format!(
                "database {:?}: not a postgres:// URL, a sqlite:// URL or a file path",
                redact(database)
            ))
        } else {
            Ok(Storage::Sqlite(PathBuf::from(database)))
        }
    }

    /// How to name it in logs: a URL's password left out.
    pub fn describe(&self) -> String {
        match self {
            Storage::Sqlite(path) => format!("sqlite {}", path.display()),
            Storage::Postgres(url) => format!("postgres {}", redact(url)),
        }
    }
}

/// `url` with what stands between its scheme and its host (user and password) masked.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_settings_name_postgres_or_sqlite() {
        let pg = "postgres://geosaga:secret@db:5432/us_east?sslmode=require";
        assert_eq!(Storage::parse(pg), Ok(Storage::Postgres(pg.to_owned())));
        assert_eq!(
            Storage::parse("postgresql://db/x"),
            Ok(Storage::Postgres("postgresql://db/x".into()))
        );
        assert_eq!(Storage::parse("sqlite://d/r.db"), Ok(Storage::Sqlite("d/r.db".into())));
        assert_eq!(Storage::parse("/var/r.db"), Ok(Storage::Sqlite("/var/r.db".into())));
        let bad = Storage::parse("mysql://u:pw@db/x").unwrap_err();
        assert!(bad.contains("not a postgres:// URL") && !bad.contains("pw"), "{bad}");
        assert!(Storage::parse("").is_err());
        assert_eq!(
            Storage::parse(pg).unwrap().describe(),
            "postgres postgres://***@db:5432/us_east?sslmode=require"
        );
    }
}
