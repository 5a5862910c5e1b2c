-- A job may ask for a target accuracy instead of a fixed threshold: each labelling model turns
-- it into its own threshold from the out-of-fold evidence saved with it.
ALTER TABLE jobs ADD COLUMN target_accuracy DOUBLE PRECISION;
