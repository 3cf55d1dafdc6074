-- Active/standby pairs (issue 19): the instances of the bridge that run on this database, and
-- every time one of them took the lease (became the active one).

-- One row per instance (its `instance` name): its process, whether it is active or a standby
-- waiting for the lease, since when, and when it last said it was alive (every 5 s).
CREATE TABLE instances (
    name         TEXT PRIMARY KEY,
    pid          BIGINT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('active', 'standby')),
    since        BIGINT NOT NULL,
    seen_at      BIGINT NOT NULL
);

-- Each taking of the lease: by whom, when, and who had it before (NULL: nobody on record).
CREATE TABLE leases (
    id           BIGSERIAL PRIMARY KEY,
    instance     TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    taken_at     BIGINT NOT NULL,
    previous     TEXT
);
CREATE INDEX leases_taken_at ON leases (taken_at);
