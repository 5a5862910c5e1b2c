-- Label jobs: images to label, each model's answer, and people's reviews.
-- The same dialect subset as 0001; pixel data and probabilities (little-endian f32s) are
-- BYTEA, which SQLite stores as BLOBs. Times are Unix milliseconds.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- NULL: each labelling model's own threshold.
    auto_accept_threshold DOUBLE PRECISION,
    input_width BIGINT NOT NULL,
    input_height BIGINT NOT NULL,
    -- JSON array, in class-index order, of the model active at creation.
    class_names TEXT NOT NULL
);

-- Each distinct image of a job once, at the job's input size (8-bit gray).
CREATE TABLE job_images (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    sha256 TEXT NOT NULL,
    pixels BYTEA NOT NULL,
    PRIMARY KEY (job_id, sha256)
);

-- One row per client id. status: pending, auto_accepted, needs_review, reviewed.
-- A pending item is claimed by one worker until claimed_until; a crashed worker's claims
-- expire and another worker takes them. A prediction is written only by the worker holding
-- the claim of a still-pending item; `labellings` counts those writes (always 0 or 1) and
-- `labelled_by` names the worker, so "labelled exactly once" can be checked in the database.
CREATE TABLE items (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    predicted_class BIGINT,
    confidence DOUBLE PRECISION,
    probabilities BYTEA,
    model_version TEXT,
    labelled_by TEXT,
    labellings BIGINT NOT NULL DEFAULT 0,
    human_class BIGINT,
    reviewed_at BIGINT,
    claimed_by TEXT,
    claimed_until BIGINT,
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, client_id)
);

CREATE INDEX items_by_status ON items (job_id, status, confidence, seq);
CREATE INDEX items_to_claim ON items (status, claimed_until);
