-- Whether a user's last write was a hand edit in Moonborn (the admin API's profile, status or
-- role edits; 1) rather than the controller's (0): the plan labels the change that reverts it as
-- drift repair, not an IdP change. Set by those hand actions, cleared by every write the
-- controller applies. (0006 is taken by another change.)
ALTER TABLE users ADD COLUMN hand_edited BIGINT NOT NULL DEFAULT 0;
