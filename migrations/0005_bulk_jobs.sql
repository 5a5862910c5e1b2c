-- Bulk label jobs: an image costs a few row writes, not seven B-trees and a
-- claim-read-rewrite cycle.
--
-- * Pixels move from one row per distinct image, keyed by a random hash (`job_images`), to
--   one blob per run of up to 64 consecutive items (`image_batches`): an item's pixels are
--   bytes `(seq - batch_seq) * image_size` onwards of its batch's blob.
-- * `items` loses `image_sha256` and gains `batch_seq`; the claim index only holds pending
--   items and the review index leaves auto-accepted ones out (both partial), since items
--   labelled when added are never claimed and most of them are accepted.
-- * `job_counts` keeps each job's items per status and model version, written in the same
--   transaction as the items, so `GetJob` reads a few rows instead of counting the job.
-- Existing items each become a batch of one (their pixels copied), and the counts are taken
-- once here.

CREATE TABLE image_batches (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    first_seq BIGINT NOT NULL,
    image_size BIGINT NOT NULL,
    pixels BYTEA NOT NULL,
    PRIMARY KEY (job_id, first_seq)
);

INSERT INTO image_batches (job_id, first_seq, image_size, pixels)
SELECT i.job_id, i.seq, j.input_width * j.input_height, p.pixels
FROM items i
JOIN jobs j ON j.id = i.job_id
JOIN job_images p ON p.job_id = i.job_id AND p.sha256 = i.image_sha256;

CREATE TABLE job_items (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq BIGINT NOT NULL,
    client_id TEXT NOT NULL,
    batch_seq BIGINT NOT NULL,
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
    evidence BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq),
    UNIQUE (job_id, client_id)
);

INSERT INTO job_items (job_id, seq, client_id, batch_seq, status, predicted_class, confidence,
    probabilities, model_version, labelled_by, labellings, human_class, reviewed_at,
    claimed_by, claimed_until, evidence)
SELECT job_id, seq, client_id, seq, status, predicted_class, confidence, probabilities,
    model_version, labelled_by, labellings, human_class, reviewed_at, claimed_by,
    claimed_until, evidence
FROM items;

DROP TABLE items;
DROP TABLE job_images;
ALTER TABLE job_items RENAME TO items;

-- A job's items of one status in the order they were added, auto-accepted ones left out.
-- No confidence in the key: new items land at random places of a confidence-ordered index,
-- and on both databases that cost more than the rest of an insert (70,000 items with 30 %
-- below the threshold, 2 cores: SQLite 35,000 → 67,000 images/s, Postgres 19,800 → 29,100
-- images/s without it). Listing in review order sorts the status' items instead.
CREATE INDEX items_by_status ON items (job_id, status, seq)
    WHERE status <> 'auto_accepted';
CREATE INDEX items_to_claim ON items (status, claimed_until) WHERE status = 'pending';

CREATE TABLE job_counts (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    status TEXT NOT NULL,
    -- '' for items no model labelled yet.
    model_version TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (job_id, status, model_version)
);

INSERT INTO job_counts (job_id, status, model_version, n)
SELECT job_id, status, COALESCE(model_version, ''), COUNT(*)
FROM items
GROUP BY job_id, status, COALESCE(model_version, '');
