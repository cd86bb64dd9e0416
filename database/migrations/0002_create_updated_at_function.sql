-- 0002_create_updated_at_function.sql
--
-- Creates public.agentdb_set_updated_at(), the one trigger function that keeps the
-- updated_at column of every agentdb table current. Each table migration attaches it as
-- BEFORE UPDATE ... FOR EACH ROW trigger named trg_{table}_updated_at, so application code
-- never has to remember to set updated_at itself.
--
-- It lives in public (not in a domain schema) because all four domain schemas share it.
-- An UPDATE that changes nothing (NEW IS NOT DISTINCT FROM OLD) keeps the old timestamp.
--
-- Re-runnable: CREATE OR REPLACE FUNCTION; COMMENT ON is an assignment.

CREATE OR REPLACE FUNCTION public.agentdb_set_updated_at()
RETURNS trigger
LANGUAGE plpgsql
AS $function$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$function$;

COMMENT ON FUNCTION public.agentdb_set_updated_at() IS
'Trigger function (BEFORE UPDATE, FOR EACH ROW) that sets NEW.updated_at to now(), the start '
'time of the current transaction, whenever the row actually changes. Attached to every '
'agentdb table as trg_{table}_updated_at. Caveat: stored generated columns (such as '
'messaging.messages.content_tsv) are still NULL in NEW while BEFORE triggers run, so on '
'such tables every UPDATE counts as a change and advances updated_at.';
