-- Trivial procedures for measuring procgate's own cost (procgate-bench).

-- The cheapest meaningful call: two inputs, one IN OUT result.
CREATE OR REPLACE PROCEDURE public.bench_add(a integer, b integer, INOUT c integer)
LANGUAGE plpgsql AS $$
BEGIN
    c := a + b;
END $$;

-- A job that reports `p_steps` progress notices over `p_total_ms`.
CREATE OR REPLACE PROCEDURE public.bench_progress(p_steps integer, p_total_ms integer)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..p_steps LOOP
        PERFORM pg_sleep(p_total_ms / 1000.0 / p_steps);
        RAISE NOTICE 'progress: % step %', i * 100 / p_steps, i;
    END LOOP;
END $$;

-- A job with no outputs at all, for measuring what a retained job costs.
CREATE OR REPLACE PROCEDURE public.bench_noop()
LANGUAGE plpgsql AS $$
BEGIN
    NULL;
END $$;

-- A big result of rows of about 100 bytes, for ExecuteStream against COPY.
-- STABLE SQL with generate_series in the select list, so that PostgreSQL
-- inlines it and its rows flow as they are made.
CREATE OR REPLACE FUNCTION public.bench_rows(n bigint)
RETURNS TABLE (id bigint, payload text)
LANGUAGE sql STABLE AS $$
    SELECT g, repeat('x', 88) || lpad(g::text, 8, '0') FROM (SELECT generate_series(1, n) AS g) AS s
$$;
