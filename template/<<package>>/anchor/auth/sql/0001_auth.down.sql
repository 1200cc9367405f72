DROP TABLE anchor_auth_throttle;
DROP TABLE anchor_auth_keys;
DROP TABLE anchor_org_members;
ALTER TABLE anchor_users DROP CONSTRAINT anchor_users_default_org;
DROP TABLE anchor_orgs;
DROP TABLE anchor_users;
