-- Rollback of 0028_create_knowledge_documents.sql (its chunks go first: 0029 rolls back
-- before it). No CASCADE: fails while a later table still references it.

DROP TABLE IF EXISTS knowledge.documents;
