-- Exports and exception waivers (DESIGN 3.9), in schema esq, owned by the
-- maintenance role like V1's tables.

-- One row per export job. A job is claimed by one esq at a time
-- (claimed_by, heartbeat); a job whose runner stopped reporting is taken
-- over and starts again, or ends FAILED after max attempts. `request` is
-- what was asked (statement, format, hash fields), `scope` the ticket's
-- scope at submission: the job materialises through the guard under it.
CREATE TABLE esq.export_jobs (
    id              text        PRIMARY KEY,
    state           text        NOT NULL DEFAULT 'QUEUED'
        CHECK (state IN ('QUEUED', 'MATERIALIZING', 'VALIDATING', 'PACKAGING',
                         'ENCRYPTING', 'STORED', 'COMPLETED', 'FAILED')),
    requester       text        NOT NULL,
    dataset         text        NOT NULL,
    reason          text        NOT NULL,
    request         jsonb       NOT NULL,
    scope           jsonb       NOT NULL,
    retention_days  integer     NOT NULL CHECK (retention_days > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    claimed_by      text,
    heartbeat       timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    rows_done       bigint      NOT NULL DEFAULT 0,
    bytes           bigint,
    bundle_sha256   text,
    location        text,
    error           text
);
CREATE INDEX export_jobs_queue ON esq.export_jobs (state, created_at);

-- The consent ledger: one entry per completed export. Only hashed subject
-- keys (the keyed hash receipts carry) are kept, one row each in
-- export_subjects, so a subject lookup finds every export that held it.
CREATE TABLE esq.export_ledger (
    job            text        PRIMARY KEY REFERENCES esq.export_jobs (id),
    dataset        text        NOT NULL,
    subject_count  bigint      NOT NULL,
    scope          jsonb       NOT NULL,
    hash_mode      text        NOT NULL,
    hash_fields    text[]      NOT NULL DEFAULT '{}',
    rows           bigint      NOT NULL,
    retention_days integer     NOT NULL,
    expires_at     timestamptz NOT NULL,
    requester      text        NOT NULL,
    reason         text        NOT NULL,
    location       text        NOT NULL,
    bundle_sha256  text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    purged_at      timestamptz
);
CREATE INDEX export_ledger_expiry ON esq.export_ledger (expires_at) WHERE purged_at IS NULL;

CREATE TABLE esq.export_subjects (
    job           text        NOT NULL REFERENCES esq.export_ledger (job),
    dataset       text        NOT NULL,
    subject_hash  text        NOT NULL,
    -- Set when the subject was forgotten after the export was made: the
    -- bundle already delivered still holds it.
    forgotten_at  timestamptz,
    PRIMARY KEY (job, subject_hash)
);
CREATE INDEX export_subjects_subject ON esq.export_subjects (dataset, subject_hash);

-- Exception waivers: a requester asks for a wider scope than policy gives,
-- a data steward (never the requester) approves or denies it; an approved
-- exception lets its requester issue tickets for that scope until it
-- expires (the sweep in esq serve then marks it expired). `approver` is
-- the steward the requester named (NULL: any), `decided_by` who decided;
-- `uses` counts the tickets issued under it. Purpose, justification and
-- comment are kept here only (audit records carry no free text).
CREATE TABLE esq.exceptions (
    id             text        PRIMARY KEY,
    state          text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'revoked')),
    requester      text        NOT NULL,
    dataset        text        NOT NULL,
    fields         text[]      NOT NULL,
    aggregate      text,
    purpose        text        NOT NULL,
    justification  text        NOT NULL,
    duration_secs  bigint      NOT NULL CHECK (duration_secs > 0),
    approver       text,
    decided_by     text,
    comment        text,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    decided_at     timestamptz,
    expires_at     timestamptz,
    uses           bigint      NOT NULL DEFAULT 0,
    CHECK ((state = 'approved') <= (expires_at IS NOT NULL)),
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    -- Nobody decides their own exception (esq and its policy check it too).
    CHECK (decided_by IS NULL OR decided_by <> requester)
);
CREATE INDEX exceptions_requester ON esq.exceptions (requester, state);
CREATE INDEX exceptions_open ON esq.exceptions (state, expires_at)
    WHERE state IN ('pending', 'approved');

-- Tickets issued under an exception (by hash, never the ticket): a
-- withdrawn exception revokes them at once.
CREATE TABLE esq.exception_tickets (
    exception   text        NOT NULL REFERENCES esq.exceptions (id),
    ticket_hash text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (exception, ticket_hash)
);
