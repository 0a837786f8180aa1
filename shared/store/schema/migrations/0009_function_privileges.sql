-- Our bx_* functions are for the workers only: not callable by PUBLIC or Supabase's anon/authenticated roles
-- (Supabase grants EXECUTE on new public functions to them by default); the service role keeps EXECUTE.
-- Later migrations that add bx_* functions call bx__restrict_worker_functions() again.
CREATE OR REPLACE FUNCTION bx__restrict_worker_functions() RETURNS void
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_fn text;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure::text
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public' AND p.proname LIKE 'bx\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', v_fn);
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM anon', v_fn);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM authenticated', v_fn);
        END IF;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', v_fn);
        END IF;
    END LOOP;
END $$;

SELECT bx__restrict_worker_functions();
