-- Near-duplicate groups per method (embedding, phash): size, representative, sources spanned.
-- Created by migration 0006 (replaces the 0002 view, which had no method).
CREATE OR REPLACE VIEW duplicate_group_sizes AS
SELECT
    d.model_id,
    m.name                          AS model,
    d.method,
    d.group_id,
    count(*)                        AS size,
    count(DISTINCT f.source_id)     AS sources,
    max(d.distance)                 AS max_distance,
    rep.path                        AS representative_path
FROM duplicate_groups d
JOIN models m ON m.id = d.model_id
JOIN frames f ON f.id = d.frame_id
JOIN frames rep ON rep.id = d.group_id
GROUP BY d.model_id, m.name, d.method, d.group_id, rep.path;
