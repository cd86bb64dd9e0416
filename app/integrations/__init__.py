"""Optional integrations with the frameworks agentdb's users build on, each behind an extra
(`pip install agentdb[aiogram]`); the core never imports them."""
