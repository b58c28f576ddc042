-- pkg_etl: an ETL-like "package" of procedures to try procgate with.
--
-- PostgreSQL has no packages, so the package is a schema. Loaded by
-- `procgate serve` / `procgate demo` into their embedded database; load it
-- into your own with `psql -f docs/examples/postgres/pkg_etl.sql`.

CREATE SCHEMA IF NOT EXISTS pkg_etl;

CREATE TABLE IF NOT EXISTS pkg_etl.ventas (
    id      bigserial PRIMARY KEY,
    region  text          NOT NULL,
    fecha   date          NOT NULL,
    importe numeric(12,2) NOT NULL
);

INSERT INTO pkg_etl.ventas (region, fecha, importe)
SELECT (ARRAY['norte', 'sur', 'este', 'oeste'])[1 + i % 4],
       date '2024-01-01' + (i % 90),
       round((i * 37 % 1000) + (i % 100) / 100.0, 2)
  FROM generate_series(1, 400) AS i
 WHERE NOT EXISTS (SELECT 1 FROM pkg_etl.ventas);

-- A long load that reports its progress: each `progress: N message` notice
-- moves the job's progress bar; other notices become the job's messages.
CREATE OR REPLACE PROCEDURE pkg_etl.proceso_largo(
    p_fecha     date,
    p_pasos     integer DEFAULT 5,
    p_pausa_ms  integer DEFAULT 400,
    INOUT p_resultado text DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'proceso_largo: inicio para %', p_fecha;
    FOR i IN 1..p_pasos LOOP
        PERFORM pg_sleep(p_pausa_ms / 1000.0);
        RAISE NOTICE 'progress: % cargando paso % de %', i * 100 / p_pasos, i, p_pasos;
    END LOOP;
    p_resultado := format('%s pasos procesados para %s', p_pasos, p_fecha);
END $$;

-- A sum with OUT parameters; numeric stays exact.
CREATE OR REPLACE PROCEDURE pkg_etl.sumar(
    a numeric,
    b numeric,
    OUT total numeric,
    OUT descripcion text)
LANGUAGE plpgsql AS $$
BEGIN
    total := a + b;
    descripcion := format('%s + %s = %s', a, b, total);
END $$;

-- A report returned as a cursor: call it with returns = CURSOR.
CREATE OR REPLACE FUNCTION pkg_etl.reporte_ventas(p_desde date DEFAULT date '2024-01-01')
RETURNS refcursor
LANGUAGE plpgsql AS $$
DECLARE
    c refcursor;
BEGIN
    OPEN c FOR
        SELECT region, count(*)::integer AS ventas, sum(importe) AS total
          FROM pkg_etl.ventas
         WHERE fecha >= p_desde
         GROUP BY region
         ORDER BY region;
    RETURN c;
END $$;

-- The same data as a set-returning function.
CREATE OR REPLACE FUNCTION pkg_etl.ventas_por_region(p_region text)
RETURNS TABLE (fecha date, importe numeric)
LANGUAGE sql STABLE AS $$
    SELECT fecha, importe FROM pkg_etl.ventas WHERE region = p_region ORDER BY id
$$;

-- Fails on purpose for a non-positive batch: a user-raised error (P0001).
CREATE OR REPLACE PROCEDURE pkg_etl.validar_lote(p_lote integer)
LANGUAGE plpgsql AS $$
BEGIN
    IF p_lote <= 0 THEN
        RAISE EXCEPTION 'lote % inválido: debe ser positivo', p_lote
            USING HINT = 'use un número de lote mayor que cero';
    END IF;
    RAISE NOTICE 'lote % validado', p_lote;
END $$;
