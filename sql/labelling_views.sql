-- Views of the labelling loop for SQL users and BI tools; created by migration 0002.

-- Per label and source: how many frames are labelled positive and negative, by whom.
CREATE OR REPLACE VIEW label_counts AS
SELECT
    l.label,
    s.id                                                    AS source_id,
    s.uri                                                   AS source_uri,
    count(*) FILTER (WHERE l.positive)                      AS positives,
    count(*) FILTER (WHERE NOT l.positive)                  AS negatives,
    count(*) FILTER (WHERE l.origin = 'manual')             AS manual,
    count(*) FILTER (WHERE l.origin = 'propagated')         AS propagated,
    max(l.updated_at)                                       AS last_labelled_at
FROM labels l
JOIN frames f ON f.id = l.frame_id
JOIN sources s ON s.id = f.source_id
GROUP BY l.label, s.id, s.uri;

-- Propagated scores with the frame they belong to and whether the frame is labelled.
CREATE OR REPLACE VIEW label_score_hits AS
SELECT
    ls.label,
    m.name          AS model,
    ls.score,
    ls.computed_at,
    f.id            AS frame_id,
    f.path,
    f.pts_seconds,
    s.id            AS source_id,
    s.uri           AS source_uri,
    l.positive      AS labelled_positive,
    l.origin        AS label_origin
FROM label_scores ls
JOIN models m ON m.id = ls.model_id
JOIN frames f ON f.id = ls.frame_id
JOIN sources s ON s.id = f.source_id
LEFT JOIN labels l ON l.frame_id = ls.frame_id AND l.label = ls.label;

-- Near-duplicate groups: size, representative, and how many sources they span.
CREATE OR REPLACE VIEW duplicate_group_sizes AS
SELECT
    d.model_id,
    m.name                          AS model,
    d.group_id,
    count(*)                        AS size,
    count(DISTINCT f.source_id)     AS sources,
    max(d.distance)                 AS max_distance,
    rep.path                        AS representative_path
FROM duplicate_groups d
JOIN models m ON m.id = d.model_id
JOIN frames f ON f.id = d.frame_id
JOIN frames rep ON rep.id = d.group_id
GROUP BY d.model_id, m.name, d.group_id, rep.path;

-- k-means clusters: size and spread; small clusters far from the rest are rare scenes.
CREATE OR REPLACE VIEW cluster_sizes AS
SELECT
    c.model_id,
    m.name                          AS model,
    c.cluster,
    count(*)                        AS size,
    avg(c.distance)                 AS mean_distance,
    max(c.distance)                 AS max_distance,
    count(DISTINCT f.source_id)     AS sources
FROM clusters c
JOIN models m ON m.id = c.model_id
JOIN frames f ON f.id = c.frame_id
GROUP BY c.model_id, m.name, c.cluster;
