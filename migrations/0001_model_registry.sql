-- The model registry: every trained model, and the history of which one was active.
-- One dialect subset that SQLite and PostgreSQL both run: TEXT, BIGINT, DOUBLE PRECISION.
-- Times are Unix milliseconds; JSON documents are stored as TEXT.

CREATE TABLE models (
    version TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    preset TEXT NOT NULL,
    settings TEXT NOT NULL,
    dataset TEXT NOT NULL,
    class_names TEXT NOT NULL,
    test_accuracy DOUBLE PRECISION,
    metrics TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL
);

-- Append-only: the row with the highest seq names the active model.
CREATE TABLE activations (
    seq BIGINT PRIMARY KEY,
    version TEXT NOT NULL REFERENCES models (version),
    activated_at BIGINT NOT NULL
);
