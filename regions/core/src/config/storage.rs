//! Where a region stores its data: the `database` setting (or `geosaga region --database`),
//! read the way `geosaga serve --database` reads its own.

use std::path::PathBuf;

use super::RegionConfig;
use crate::{Error, Result};

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

impl RegionConfig {
    /// Where it stores its data: `database` if set, else the SQLite file `data`.
    pub fn storage(&self) -> Result<Storage> {
        match &self.database {
            Some(database) => Storage::parse(database).map_err(|e| Error::Config(format!("region {}: {e}", self.name))),
            None => Ok(Storage::Sqlite(self.data_path())),
        }
    }

    /// Where its local files go: its SQLite file if it uses one, else `data`'s path;
    /// others (the membership file) are kept beside it.
    pub fn local_path(&self) -> PathBuf {
        match self.storage() {
            Ok(Storage::Sqlite(path)) => path,
            _ => self.data_path(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const TWO: &str = r#"
        [[regions]]
        name = "us-east"
        address = "http://127.0.0.1:7401"
        [[regions]]
        name = "eu-west"
        address = "http://127.0.0.1:7402/"
    "#;

    #[test]
    fn a_region_stores_in_sqlite_by_default_or_where_database_says() {
        let c = Config::parse(TWO).unwrap();
        let us = c.region("us-east").unwrap();
        assert_eq!(us.storage().unwrap(), Storage::Sqlite("geosaga-data/us-east.db".into()));
        let pg = TWO.replace(
            "name = \"eu-west\"",
            "name = \"eu-west\"\ndata = \"d/eu.db\"\ndatabase = \"postgres://db/eu\"",
        );
        let c = Config::parse(&pg).unwrap();
        let eu = c.region("eu-west").unwrap();
        assert_eq!(eu.storage().unwrap(), Storage::Postgres("postgres://db/eu".into()));
        assert_eq!(eu.local_path(), PathBuf::from("d/eu.db"), "the membership file's place");
        let file = TWO.replace(
            "name = \"eu-west\"",
            "name = \"eu-west\"\ndatabase = \"sqlite://x/eu.db\"",
        );
        let eu = Config::parse(&file).unwrap().region("eu-west").unwrap().clone();
        assert_eq!(
            (eu.storage().unwrap(), eu.local_path()),
            (Storage::Sqlite("x/eu.db".into()), "x/eu.db".into())
        );
        let bad = TWO.replace("name = \"eu-west\"", "name = \"eu-west\"\ndatabase = \"mysql://db/eu\"");
        let e = Config::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("region eu-west") && e.contains("mysql://db/eu"), "{e}");
    }

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
