-- DuckDB baseline for the embedded-run benchmark: the same job as `pipeline-runtime run`
-- (design brief §3-§5) in SQL. {input} and {out} are replaced by duckdb_run.py.
-- Writes accepted events as Parquet partitioned by UTC day and one row per user as the
-- profiles Parquet, both zstd as the runtime writes them. Money is kept in integer cents.

CREATE TEMP TABLE ev AS
WITH raw AS (
    SELECT * FROM read_csv('{input}', header = true, all_varchar = true)
), typed AS (
    SELECT
        coalesce(try_strptime(event_time, '%Y-%m-%d %H:%M:%S UTC'),
                 try_cast(event_time AS TIMESTAMP)) AS event_time,
        event_type,
        try_cast(product_id AS UBIGINT) AS product_id,
        try_cast(nullif(category_id, '') AS UBIGINT) AS category_id,
        nullif(category_code, '') AS category_code,
        nullif(brand, '') AS brand,
        try_cast(price AS DECIMAL(18, 2)) AS price,
        try_cast(user_id AS UBIGINT) AS user_id,
        nullif(user_session, '') AS user_session
    FROM raw
)
SELECT * FROM typed
WHERE event_time IS NOT NULL
  AND event_type IN ('view', 'cart', 'remove_from_cart', 'purchase')
  AND product_id > 0 AND user_id > 0
  AND price IS NOT NULL AND price >= 0;

COPY (SELECT *, CAST(event_time AS DATE) AS dt FROM ev)
TO '{out}/events' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (dt));

CREATE TEMP TABLE profiles AS
WITH base AS (
    SELECT
        user_id,
        count(*) AS total_events,
        count(*) FILTER (WHERE event_type = 'view') AS views,
        count(*) FILTER (WHERE event_type = 'cart') AS carts,
        count(*) FILTER (WHERE event_type = 'remove_from_cart') AS removals,
        count(*) FILTER (WHERE event_type = 'purchase') AS purchases,
        coalesce(sum(CAST(price * 100 AS BIGINT)) FILTER (WHERE event_type = 'purchase'), 0)
            AS revenue_cents,
        max(price) FILTER (WHERE event_type = 'purchase') AS max_purchase_price,
        count(DISTINCT user_session) AS distinct_sessions,
        count(DISTINCT product_id) AS distinct_products,
        count(DISTINCT CAST(event_time AS DATE)) AS active_days,
        min(event_time) AS first_seen,
        max(event_time) AS last_seen
    FROM ev
    GROUP BY user_id
), category AS (
    -- most frequent non-null value; ties: lexicographically smallest (binary order)
    SELECT user_id, category_code AS favorite_category
    FROM (SELECT user_id, category_code, count(*) AS n FROM ev
          WHERE category_code IS NOT NULL GROUP BY ALL)
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY n DESC, category_code) = 1
), brand AS (
    SELECT user_id, brand AS favorite_brand
    FROM (SELECT user_id, brand, count(*) AS n FROM ev
          WHERE brand IS NOT NULL GROUP BY ALL)
    QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY n DESC, brand) = 1
)
SELECT
    b.user_id, total_events, views, carts, removals, purchases,
    CAST(CAST(revenue_cents AS DECIMAL(20, 2)) * 0.01 AS DECIMAL(20, 2)) AS revenue,
    CAST(CAST(CASE WHEN purchases = 0 THEN 0
                   ELSE (2 * revenue_cents + purchases) // (2 * purchases) END
              AS DECIMAL(18, 2)) * 0.01 AS DECIMAL(18, 2)) AS avg_order_value,
    max_purchase_price,
    distinct_sessions, distinct_products, active_days, first_seen, last_seen,
    favorite_category, favorite_brand,
    purchases / total_events AS conversion_rate,
    CASE WHEN carts = 0 THEN 0.0 ELSE purchases / carts END AS cart_to_purchase_rate,
    CASE
        WHEN purchases >= 10 AND revenue_cents >= 100000 THEN 'VIP'
        WHEN purchases >= 5 AND revenue_cents >= 25000 THEN 'High Value'
        WHEN purchases >= 3 AND revenue_cents >= 10000 THEN 'Medium Value'
        WHEN purchases >= 1 THEN 'Converting Customer'
        WHEN carts >= 1 THEN 'Interested Shopper'
        WHEN views >= 10 THEN 'Active Browser'
        ELSE 'Casual Visitor'
    END AS segment
FROM base b
LEFT JOIN category USING (user_id)
LEFT JOIN brand USING (user_id);

COPY profiles TO '{out}/profiles/part-00000.parquet' (FORMAT parquet, COMPRESSION zstd);
