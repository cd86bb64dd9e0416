-- 0031_secure_knowledge.sql
--
-- The knowledge tables join the least-privilege setup of 0011-0016:
--
-- Grants: DML for agentdb_app and agentdb_worker (no TRUNCATE), SELECT for agentdb_readonly;
-- explicit, since 0011's default privileges cover only the schemas it names.
--
-- Row-level security for agentdb_app on memories, documents and chunks, keyed on the
-- transaction's agentdb.owner_id like the other owner tables: reads, writes and WITH CHECK
-- all require owner_id to equal it; no setting, no rows (fail closed). The setting is read
-- once per statement (a sub-SELECT, as for messages in 0016): recall, searches and bulk
-- inserts touch many rows at a time. agentdb_worker sees and changes every row;
-- agentdb_readonly reads every row.
--
-- Audit (0015's trigger function): every update, soft delete and delete of a memory or a
-- document. A memory's recall bookkeeping (last_recalled_at, recall_count, which every
-- recall with touch moves) is not an event: the update trigger fires only when another
-- column changes (its WHEN clause lists them), as 0015 leaves last_message_at out for chats.
-- Chunks follow their document (soft-deleted with it by delete_document, which is audited
-- on the document).
--
-- Re-runnable: GRANT and ENABLE ROW LEVEL SECURITY are idempotent; each policy is dropped
-- if present and created again; CREATE OR REPLACE TRIGGER; COMMENT ON is an assignment.

GRANT SELECT, INSERT, UPDATE, DELETE ON knowledge.memories, knowledge.documents, knowledge.chunks
    TO agentdb_app, agentdb_worker;
GRANT SELECT ON knowledge.memories, knowledge.documents, knowledge.chunks TO agentdb_readonly;

ALTER TABLE knowledge.memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge.documents ENABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge.chunks ENABLE ROW LEVEL SECURITY;

-- Memories ----------------------------------------------------------------------------------

DROP POLICY IF EXISTS pol_memories_app_owner ON knowledge.memories;
CREATE POLICY pol_memories_app_owner ON knowledge.memories
    FOR ALL TO agentdb_app
    USING (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid))
    WITH CHECK (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid));
COMMENT ON POLICY pol_memories_app_owner ON knowledge.memories IS
'agentdb_app reads and writes only memories whose owner_id is the transaction''s '
'agentdb.owner_id; none without one. The setting is read once per statement (a sub-SELECT).';

DROP POLICY IF EXISTS pol_memories_worker_all ON knowledge.memories;
CREATE POLICY pol_memories_worker_all ON knowledge.memories
    FOR ALL TO agentdb_worker USING (true) WITH CHECK (true);
COMMENT ON POLICY pol_memories_worker_all ON knowledge.memories IS
'agentdb_worker works on every owner''s memories.';

DROP POLICY IF EXISTS pol_memories_readonly_all ON knowledge.memories;
CREATE POLICY pol_memories_readonly_all ON knowledge.memories
    FOR SELECT TO agentdb_readonly USING (true);
COMMENT ON POLICY pol_memories_readonly_all ON knowledge.memories IS
'agentdb_readonly reads every row.';

-- Documents ---------------------------------------------------------------------------------

DROP POLICY IF EXISTS pol_documents_app_owner ON knowledge.documents;
CREATE POLICY pol_documents_app_owner ON knowledge.documents
    FOR ALL TO agentdb_app
    USING (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid))
    WITH CHECK (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid));
COMMENT ON POLICY pol_documents_app_owner ON knowledge.documents IS
'agentdb_app reads and writes only documents whose owner_id is the transaction''s '
'agentdb.owner_id; none without one.';

DROP POLICY IF EXISTS pol_documents_worker_all ON knowledge.documents;
CREATE POLICY pol_documents_worker_all ON knowledge.documents
    FOR ALL TO agentdb_worker USING (true) WITH CHECK (true);
COMMENT ON POLICY pol_documents_worker_all ON knowledge.documents IS
'agentdb_worker works on every owner''s documents.';

DROP POLICY IF EXISTS pol_documents_readonly_all ON knowledge.documents;
CREATE POLICY pol_documents_readonly_all ON knowledge.documents
    FOR SELECT TO agentdb_readonly USING (true);
COMMENT ON POLICY pol_documents_readonly_all ON knowledge.documents IS
'agentdb_readonly reads every row.';

-- Chunks ------------------------------------------------------------------------------------

DROP POLICY IF EXISTS pol_chunks_app_owner ON knowledge.chunks;
CREATE POLICY pol_chunks_app_owner ON knowledge.chunks
    FOR ALL TO agentdb_app
    USING (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid))
    WITH CHECK (owner_id = (SELECT NULLIF(current_setting('agentdb.owner_id', true), '')::uuid));
COMMENT ON POLICY pol_chunks_app_owner ON knowledge.chunks IS
'agentdb_app reads and writes only chunks whose owner_id is the transaction''s '
'agentdb.owner_id; none without one. The setting is read once per statement (a sub-SELECT).';

DROP POLICY IF EXISTS pol_chunks_worker_all ON knowledge.chunks;
CREATE POLICY pol_chunks_worker_all ON knowledge.chunks
    FOR ALL TO agentdb_worker USING (true) WITH CHECK (true);
COMMENT ON POLICY pol_chunks_worker_all ON knowledge.chunks IS
'agentdb_worker works on every owner''s chunks.';

DROP POLICY IF EXISTS pol_chunks_readonly_all ON knowledge.chunks;
CREATE POLICY pol_chunks_readonly_all ON knowledge.chunks
    FOR SELECT TO agentdb_readonly USING (true);
COMMENT ON POLICY pol_chunks_readonly_all ON knowledge.chunks IS
'agentdb_readonly reads every row.';

-- Audit -------------------------------------------------------------------------------------

CREATE OR REPLACE TRIGGER trg_memories_audit
    AFTER DELETE ON knowledge.memories
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
COMMENT ON TRIGGER trg_memories_audit ON knowledge.memories IS
'Records each delete of a memory in audit.events.';

-- Every column but the recall bookkeeping (last_recalled_at, recall_count) and updated_at.
CREATE OR REPLACE TRIGGER trg_memories_audit_update
    AFTER UPDATE ON knowledge.memories
    FOR EACH ROW
    WHEN ((OLD.id, OLD.owner_id, OLD.chat_id, OLD.source_message_id, OLD.kind, OLD.content,
           OLD.embedding, OLD.importance, OLD.times_reinforced, OLD.expires_at, OLD.metadata,
           OLD.created_at, OLD.deleted_at)
          IS DISTINCT FROM
          (NEW.id, NEW.owner_id, NEW.chat_id, NEW.source_message_id, NEW.kind, NEW.content,
           NEW.embedding, NEW.importance, NEW.times_reinforced, NEW.expires_at, NEW.metadata,
           NEW.created_at, NEW.deleted_at))
    EXECUTE FUNCTION audit.record_change();
COMMENT ON TRIGGER trg_memories_audit_update ON knowledge.memories IS
'Records each update and soft delete of a memory in audit.events (column names only), '
'except recall''s touch (last_recalled_at, recall_count alone).';

CREATE OR REPLACE TRIGGER trg_documents_audit
    AFTER UPDATE OR DELETE ON knowledge.documents
    FOR EACH ROW EXECUTE FUNCTION audit.record_change();
COMMENT ON TRIGGER trg_documents_audit ON knowledge.documents IS
'Records each update, soft delete and delete of a document in audit.events (column names '
'only).';
