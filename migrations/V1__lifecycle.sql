-- esq's own tables, in schema esq of the upstream database, owned by the
-- maintenance role. The query doors' service role reads none of them.

-- One row per forgotten subject per dataset (DESIGN 3.8). subject_hash is
-- the keyed hash receipts and the audit log carry; the key itself is kept
-- as it is where the catalog does not mark it PII (subject_key), sealed
-- otherwise (subject_sealed), so that rows a restored backup brings back
-- can be hidden and deleted again.
CREATE TABLE esq.tombstones (
    dataset        text        NOT NULL,
    subject_hash   text        NOT NULL,
    subject_key    text,
    subject_sealed bytea,
    receipt        jsonb       NOT NULL,
    forgotten_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, subject_hash),
    CHECK ((subject_key IS NULL) <> (subject_sealed IS NULL))
);

-- One row per purge of one dataset: what SI-12 reports, and where an
-- interrupted run is seen (status stays 'running').
CREATE TABLE esq.purge_runs (
    id           bigserial   PRIMARY KEY,
    dataset      text        NOT NULL,
    cutoff       date        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    rows_deleted bigint      NOT NULL DEFAULT 0,
    batches      integer     NOT NULL DEFAULT 0,
    status       text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'finished', 'failed')),
    dry_run      boolean     NOT NULL DEFAULT false
);
CREATE INDEX purge_runs_dataset ON esq.purge_runs (dataset, started_at DESC);
