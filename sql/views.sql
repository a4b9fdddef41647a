-- Views for SQL users and BI tools (Metabase, Superset, psql).
-- Created by the migrations; edit here and add a migration that re-runs this file.

-- Every stored search hit with its run, frame and source: one row per (run, rank).
CREATE OR REPLACE VIEW search_hits AS
SELECT
    r.id            AS run_id,
    r.name          AS run_name,
    r.backend,
    r.k,
    r.filter,
    r.query,
    r.created_at    AS searched_at,
    m.name          AS model,
    res.rank,
    res.distance,
    f.id            AS frame_id,
    f.path,
    f.frame_index,
    f.pts_seconds,
    f.width,
    f.height,
    f.captured_at,
    s.id            AS source_id,
    s.uri           AS source_uri,
    s.kind          AS source_kind,
    s.tags          AS source_tags
FROM search_runs r
JOIN search_results res ON res.run_id = r.id
JOIN frames f ON f.id = res.frame_id
JOIN sources s ON s.id = f.source_id
LEFT JOIN models m ON m.id = r.model_id;

-- Every frame with its source, its labels and the models that embedded it.
CREATE OR REPLACE VIEW frame_catalog AS
SELECT
    f.id            AS frame_id,
    f.path,
    f.frame_index,
    f.pts_seconds,
    f.width,
    f.height,
    f.captured_at,
    f.keyframe_method,
    f.keyframe_score,
    s.id            AS source_id,
    s.uri           AS source_uri,
    s.kind          AS source_kind,
    s.tags          AS source_tags,
    s.duration_seconds AS source_duration_seconds,
    COALESCE((SELECT array_agg(l.label ORDER BY l.label) FROM labels l
              WHERE l.frame_id = f.id AND l.positive), '{}') AS labels,
    COALESCE((SELECT array_agg(mo.name ORDER BY mo.name) FROM embeddings e
              JOIN models mo ON mo.id = e.model_id WHERE e.frame_id = f.id), '{}') AS models
FROM frames f
JOIN sources s ON s.id = f.source_id;
