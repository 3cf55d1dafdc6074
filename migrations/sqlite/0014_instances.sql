-- Active/standby pairs (issue 19): the instances of the bridge that run on this database, and
-- every time one of them took the lease (became the active one).

-- One row per instance (its `instance` name): its process, whether it is active or a standby
-- waiting for the lease, since when, and when it last said it was alive (every 5 s).
CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    pid          INTEGER NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('active', 'standby')),
    since        INTEGER NOT NULL,
    seen_at      INTEGER NOT NULL
);

-- Each taking of the lease: by whom, when, and who had it before (NULL: nobody on record).
CREATE TABLE leases (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    taken_at     INTEGER NOT NULL,
    previous     TEXT
);
CREATE INDEX leases_taken_at ON leases (taken_at);
