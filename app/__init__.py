"""agentdb: the PostgreSQL data layer of an AI-assistant backend."""
