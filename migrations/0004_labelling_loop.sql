-- The labelling loop: jobs with classes of their own that start without a model, each job's
-- own current model (a lineage in the registry), the random slice of picks that judges the
-- threshold, and training runs executed by workers.

-- 0: the job was created under the serving model and follows it until it has a model of its
-- own; 1: the job has its own classes and waits for its first training run.
ALTER TABLE jobs ADD COLUMN own_classes BIGINT NOT NULL DEFAULT 0;
-- The job's own current model (a registry version), set when a training run finishes.
ALTER TABLE jobs ADD COLUMN model_version TEXT;
-- The autoencoder pretrained on the job's own images (a model file), once there is one.
ALTER TABLE jobs ADD COLUMN autoencoder_path TEXT;

-- 1: picked as part of the random slice the auto-accept threshold is judged on. Once a person
-- labels it, it judges thresholds and never trains.
ALTER TABLE items ADD COLUMN evidence BIGINT NOT NULL DEFAULT 0;

-- Which job a registered model was trained for (NULL: a pipeline run).
ALTER TABLE models ADD COLUMN job_id TEXT;

-- Training runs: queued by the CLI, Label Studio or a review trigger; claimed and executed by
-- one worker (a lease that expires if the worker dies). state: queued, running, finished,
-- failed. Times are Unix milliseconds; result is JSON.
CREATE TABLE training_runs (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    created_at BIGINT NOT NULL,
    activate BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    result TEXT,
    error TEXT,
    claimed_by TEXT,
    claimed_until BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    finished_at BIGINT
);

CREATE INDEX training_runs_by_state ON training_runs (state, created_at);
CREATE INDEX training_runs_by_job ON training_runs (job_id, created_at);
