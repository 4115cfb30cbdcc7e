#ifndef ACCESS_RULES_SETTINGS_H
#define ACCESS_RULES_SETTINGS_H

struct mail_user;

/* The plugin's settings, read once per user. Userdb fields of the same
   names override the plugin { } values, as Dovecot does for every
   plugin setting. */
struct access_rules_settings {
	/* access_rules_file: required */
	const char *file;
	/* access_rules_ruleset: the rule set this user is evaluated
	   against */
	const char *ruleset;
	/* access_rules_groups: the user's groups, for "group" conditions */
	const char *const *groups;
	/* access_rules_session_dir: where live sessions are counted for
	   session caps; "" = ~/.dovecot.access-sessions */
	const char *session_dir;
	/* access_rules_client_id: the IMAP ID the client sent before
	   login, as imap-login passes it to auth (%{client_id}) */
	const char *client_id;
	/* access_rules_client_tls: the client's TLS state as a proxy
	   forwarded it ("tls" or "plaintext"); anything else (unset, or
	   the "yes" Dovecot makes of an empty field) = the connection's */
	const char *client_tls;
};

/* Returns 0 on success, -1 with error_r naming the bad setting. */
int access_rules_settings_read(struct mail_user *user,
			       const struct access_rules_settings **set_r,
			       const char **error_r);

/* Extracts "name" and "version" from an IMAP ID parameter list, given
   either as the client_id string ("name" "x" "version" "y") or with
   the surrounding parentheses. Missing values are returned as NULL. */
void access_rules_parse_client_id(const char *id, const char **name_r,
				  const char **version_r);

#endif
