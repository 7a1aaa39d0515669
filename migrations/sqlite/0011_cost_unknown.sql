-- 1 when some of a run's model usage had no known price (the pipeline's model is in neither the
-- built-in price table nor its provider's `prices`): its cost_micros is then a lower bound, and
-- spend is shown as unknown rather than as a figure.
ALTER TABLE runs ADD COLUMN cost_unknown INTEGER NOT NULL DEFAULT 0;
