-- Group renames in the intent journal, by group: a member change of a group whose name binds no
-- role is journaled per member only while a rename of that group waits for the controller
-- (see `members_matter` in src/store/groups.rs). Partial: no other journal row pays for it.
CREATE INDEX intent_journal_renames ON intent_journal(tenant_id, resource_id, seq) WHERE op = 'rename';
