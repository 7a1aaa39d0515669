-- `enrichd eval` reports: the pipeline's task run on records a human already filled, scored per
-- field. The whole report is kept as JSON (its keys are stable, see docs/eval.md); the columns
-- beside it are what lists of reports show and sort by.
CREATE TABLE eval_reports (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline      TEXT   NOT NULL,
    created_at    BIGINT NOT NULL,
    task_version  TEXT   NOT NULL,
    model         TEXT   NOT NULL,
    sampled       BIGINT NOT NULL,
    report        TEXT   NOT NULL
);
CREATE INDEX eval_reports_pipeline ON eval_reports (pipeline, id);
