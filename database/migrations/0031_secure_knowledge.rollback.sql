-- Rollback of 0031_secure_knowledge.sql: the audit triggers and the policies go, row-level
-- security is disabled on the three tables (the grants go with the tables, which the
-- earlier rollbacks drop).

DROP TRIGGER IF EXISTS trg_documents_audit ON knowledge.documents;
DROP TRIGGER IF EXISTS trg_memories_audit_update ON knowledge.memories;
DROP TRIGGER IF EXISTS trg_memories_audit ON knowledge.memories;

DROP POLICY IF EXISTS pol_chunks_readonly_all ON knowledge.chunks;
DROP POLICY IF EXISTS pol_chunks_worker_all ON knowledge.chunks;
DROP POLICY IF EXISTS pol_chunks_app_owner ON knowledge.chunks;
DROP POLICY IF EXISTS pol_documents_readonly_all ON knowledge.documents;
DROP POLICY IF EXISTS pol_documents_worker_all ON knowledge.documents;
DROP POLICY IF EXISTS pol_documents_app_owner ON knowledge.documents;
DROP POLICY IF EXISTS pol_memories_readonly_all ON knowledge.memories;
DROP POLICY IF EXISTS pol_memories_worker_all ON knowledge.memories;
DROP POLICY IF EXISTS pol_memories_app_owner ON knowledge.memories;

ALTER TABLE knowledge.chunks DISABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge.documents DISABLE ROW LEVEL SECURITY;
ALTER TABLE knowledge.memories DISABLE ROW LEVEL SECURITY;
