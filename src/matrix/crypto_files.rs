//! The crypto stores on disk: where they live and how `tgmx backup` copies them. Shared by the
//! builds with and without the `e2ee` feature (a database may hold stores from either).

use std::path::PathBuf;

use crate::error::Result;

/// The crypto directory for a database URL (`sqlite:///path/tgmx.db` -> `/path/tgmx-crypto`).
pub fn dir_for(database: &str) -> PathBuf {
    let path = database.strip_prefix("sqlite://").unwrap_or(database);
    let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
    path.parent().unwrap_or(std::path::Path::new(".")).join("tgmx-crypto")
}

/// Copy every crypto store under `src` (one SQLite database per file, taken online with
/// `VACUUM INTO`, so a running daemon is no problem) to the same layout under `dst`.
/// Returns how many databases were copied.
pub async fn backup_dir(src: &std::path::Path, dst: &std::path::Path) -> Result<usize> {
    use sqlx::Connection;
    let mut copied = 0;
    let Ok(users) = std::fs::read_dir(src) else {
        return Ok(0); // no encrypted room was ever bridged
    };
    for user in users.flatten().filter(|e| e.path().is_dir()) {
        let target = dst.join(user.file_name());
        std::fs::create_dir_all(&target)?;
        for f in std::fs::read_dir(user.path())?.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".sqlite3") {
                continue;
            }
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(f.path())
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
            let out = target.join(&name);
            sqlx::query("VACUUM INTO ?")
                .bind(out.to_string_lossy().into_owned())
                .execute(&mut conn)
                .await?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o600))?;
            }
            copied += 1;
        }
    }
    Ok(copied)
}
