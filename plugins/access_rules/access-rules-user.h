#ifndef ACCESS_RULES_USER_H
#define ACCESS_RULES_USER_H

#include "module-context.h"
#include "mail-user.h"
#include "access-rules.h"

#define ACCESS_RULES_USER_CONTEXT(obj) \
	MODULE_CONTEXT(obj, access_rules_user_module)

struct imap_match_glob;
struct access_rules_settings;
struct access_rules_session_slot;

struct access_rules_user {
	union mail_user_module_context module_ctx;
	struct mail_user *user;
	struct event *event;
	const struct access_rules_settings *set;

	/* what the rules were evaluated with, and what they decided */
	struct access_rules_session session;
	struct access_rules_decision decision;
	const char *rules_path;
	/* Set when the session is refused: the text the client sees */
	const char *refusal;
	/* the refusal is a session cap, not a deny rule */
	bool refusal_is_limit;
	/* an IMAP ID was already used for the decision, so later ID
	   commands don't change it */
	bool client_id_used;

	struct access_rules_session_slot *slot;

	/* visibility patterns compiled for one hierarchy separator */
	struct imap_match_glob *visible_glob, *hidden_glob;
	char globs_sep;
	bool globs_valid;
};

extern MODULE_CONTEXT_DEFINE(access_rules_user_module,
			     &mail_user_module_register);
extern struct event_category event_category_access_rules;

void access_rules_mail_user_created(struct mail_user *user);
void access_rules_users_deinit(void);

/* Returns the context of the logged-in user that user belongs to (a
   shared mailbox's owner belongs to the user who opened it), or NULL if
   the rules don't apply to it (LMTP, doveadm, ...). */
struct access_rules_user *access_rules_user_get(struct mail_user *user);

/* The client sent an IMAP ID after login: evaluate the rules again with
   the client's name and version. Only the first ID counts. */
void access_rules_user_client_id(struct mail_user *user,
				 const char *name, const char *version);

bool access_rules_user_is_readonly(const struct access_rules_user *auser);
/* The text a client sees when a read-only session tries to change
   something. */
const char *access_rules_user_readonly_error(const struct access_rules_user *auser);
/* Returns TRUE if the rules let the session see the mailbox. */
bool access_rules_user_mailbox_visible(struct access_rules_user *auser,
				       char sep, const char *vname);

#endif
