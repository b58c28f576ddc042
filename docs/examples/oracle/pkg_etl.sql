-- PKG_ETL for Oracle: the long load of docs/oracle.md, reporting progress
-- through V$SESSION_LONGOPS, which procgate turns into job progress.
-- Units end with "/" as in SQL*Plus (sqlplus user/pw@db @pkg_etl.sql).

CREATE OR REPLACE PACKAGE pkg_etl AS
    PROCEDURE proceso_largo(
        p_fecha     IN  DATE,
        p_pasos     IN  NUMBER DEFAULT 5,
        p_resultado OUT VARCHAR2);
END pkg_etl;
/

CREATE OR REPLACE PACKAGE BODY pkg_etl AS
    PROCEDURE proceso_largo(
        p_fecha     IN  DATE,
        p_pasos     IN  NUMBER DEFAULT 5,
        p_resultado OUT VARCHAR2) IS
        l_rindex BINARY_INTEGER := DBMS_APPLICATION_INFO.SET_SESSION_LONGOPS_NOHINT;
        l_slno   BINARY_INTEGER;
    BEGIN
        DBMS_OUTPUT.PUT_LINE('proceso_largo: inicio para ' || TO_CHAR(p_fecha, 'YYYY-MM-DD'));
        FOR i IN 1 .. p_pasos LOOP
            DBMS_SESSION.SLEEP(1);   -- the real work goes here
            DBMS_APPLICATION_INFO.SET_SESSION_LONGOPS(
                rindex      => l_rindex,
                slno        => l_slno,
                op_name     => 'proceso_largo',
                sofar       => i,
                totalwork   => p_pasos,
                target_desc => 'carga ' || TO_CHAR(p_fecha, 'YYYY-MM-DD'),
                units       => 'pasos');
        END LOOP;
        p_resultado := p_pasos || ' pasos procesados';
    END proceso_largo;
END pkg_etl;
/
