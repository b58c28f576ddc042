-- PKG_PROCGATE_TEST: what tests/oracle.rs calls, one procedure per scenario.
-- Each unit ends with a line holding only "/", as in SQL*Plus; the test
-- suite splits the file there. Needs Oracle 18c or later (DBMS_SESSION.SLEEP).

CREATE OR REPLACE PACKAGE pkg_procgate_test AS
    -- Every type IN OUT: values come back as they went in.
    PROCEDURE echo_all(
        p_str  IN OUT VARCHAR2,
        p_int  IN OUT PLS_INTEGER,
        p_num  IN OUT NUMBER,
        p_dbl  IN OUT BINARY_DOUBLE,
        p_bool IN OUT BOOLEAN,
        p_date IN OUT DATE,
        p_ts   IN OUT TIMESTAMP WITH TIME ZONE,
        p_raw  IN OUT RAW,
        p_clob IN OUT CLOB,
        p_blob IN OUT BLOB);

    -- IN values, OUT copies.
    PROCEDURE copy_out(
        p_str      IN  VARCHAR2,
        p_num      IN  NUMBER,
        p_date     IN  DATE,
        p_str_out  OUT VARCHAR2,
        p_num_out  OUT NUMBER,
        p_date_out OUT DATE);

    -- A function with a default.
    FUNCTION add_days(p_date IN DATE, p_days IN NUMBER DEFAULT 1) RETURN DATE;

    -- Cursors: an OUT parameter, a function result, an implicit result.
    PROCEDURE open_numbers(p_n IN NUMBER, p_rows OUT SYS_REFCURSOR);
    FUNCTION numbers(p_n IN NUMBER) RETURN SYS_REFCURSOR;
    PROCEDURE implicit_numbers(p_n IN NUMBER);

    -- Reports its progress through V$SESSION_LONGOPS.
    PROCEDURE long_load(
        p_steps  IN  NUMBER DEFAULT 5,
        p_pause  IN  NUMBER DEFAULT 0.4,
        p_result OUT VARCHAR2);

    -- Sleeps, for cancel and deadline tests.
    PROCEDURE nap(p_seconds IN NUMBER);

    -- Raises ORA-20001 with the given message.
    PROCEDURE fail(p_message IN VARCHAR2);

    -- Prints lines with DBMS_OUTPUT.
    PROCEDURE chatty(p_lines IN NUMBER);
END pkg_procgate_test;
/

CREATE OR REPLACE PACKAGE BODY pkg_procgate_test AS
    PROCEDURE echo_all(
        p_str  IN OUT VARCHAR2,
        p_int  IN OUT PLS_INTEGER,
        p_num  IN OUT NUMBER,
        p_dbl  IN OUT BINARY_DOUBLE,
        p_bool IN OUT BOOLEAN,
        p_date IN OUT DATE,
        p_ts   IN OUT TIMESTAMP WITH TIME ZONE,
        p_raw  IN OUT RAW,
        p_clob IN OUT CLOB,
        p_blob IN OUT BLOB) IS
    BEGIN
        NULL;
    END echo_all;

    PROCEDURE copy_out(
        p_str      IN  VARCHAR2,
        p_num      IN  NUMBER,
        p_date     IN  DATE,
        p_str_out  OUT VARCHAR2,
        p_num_out  OUT NUMBER,
        p_date_out OUT DATE) IS
    BEGIN
        p_str_out := p_str;
        p_num_out := p_num;
        p_date_out := p_date;
    END copy_out;

    FUNCTION add_days(p_date IN DATE, p_days IN NUMBER DEFAULT 1) RETURN DATE IS
    BEGIN
        RETURN p_date + p_days;
    END add_days;

    PROCEDURE open_numbers(p_n IN NUMBER, p_rows OUT SYS_REFCURSOR) IS
    BEGIN
        OPEN p_rows FOR
            SELECT LEVEL AS num, LEVEL * 1.5 AS half_more, 'n' || LEVEL AS label
              FROM dual CONNECT BY LEVEL <= p_n;
    END open_numbers;

    FUNCTION numbers(p_n IN NUMBER) RETURN SYS_REFCURSOR IS
        c SYS_REFCURSOR;
    BEGIN
        open_numbers(p_n, c);
        RETURN c;
    END numbers;

    PROCEDURE implicit_numbers(p_n IN NUMBER) IS
        c SYS_REFCURSOR;
    BEGIN
        open_numbers(p_n, c);
        DBMS_SQL.RETURN_RESULT(c);
    END implicit_numbers;

    PROCEDURE long_load(
        p_steps  IN  NUMBER DEFAULT 5,
        p_pause  IN  NUMBER DEFAULT 0.4,
        p_result OUT VARCHAR2) IS
        l_rindex BINARY_INTEGER := DBMS_APPLICATION_INFO.SET_SESSION_LONGOPS_NOHINT;
        l_slno   BINARY_INTEGER;
    BEGIN
        FOR i IN 1 .. p_steps LOOP
            DBMS_SESSION.SLEEP(p_pause);
            DBMS_APPLICATION_INFO.SET_SESSION_LONGOPS(
                rindex      => l_rindex,
                slno        => l_slno,
                op_name     => 'long_load',
                sofar       => i,
                totalwork   => p_steps,
                target_desc => 'batch',
                units       => 'steps');
        END LOOP;
        p_result := p_steps || ' steps loaded';
    END long_load;

    PROCEDURE nap(p_seconds IN NUMBER) IS
    BEGIN
        DBMS_SESSION.SLEEP(p_seconds);
    END nap;

    PROCEDURE fail(p_message IN VARCHAR2) IS
    BEGIN
        RAISE_APPLICATION_ERROR(-20001, p_message);
    END fail;

    PROCEDURE chatty(p_lines IN NUMBER) IS
    BEGIN
        FOR i IN 1 .. p_lines LOOP
            DBMS_OUTPUT.PUT_LINE('line ' || i);
        END LOOP;
    END chatty;
END pkg_procgate_test;
/
