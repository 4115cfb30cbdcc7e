/* Evaluates the rules for each IMAP and POP3 session and keeps the
   decision in the user's context, where the storage and protocol hooks
   enforce it. */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "imap-match.h"
#include "mail-user.h"
#include "access-rules-settings.h"
#include "access-rules-sessions.h"
#include "access-rules-user.h"

#include <sys/stat.h>

#define ACCESS_RULES_DEFAULT_SESSION_DIR ".dovecot.access-sessions"
#define ACCESS_RULES_SETTLE_SECS 2
#define ACCESS_RULES_DEFAULT_REFUSAL "Access denied by the server's policy."

struct event_category event_category_access_rules = {
	.name = "access_rules",
};

struct access_rules_user_module access_rules_user_module =
	MODULE_CONTEXT_INIT(&mail_user_module_register);

/* The compiled rules are kept per process and reloaded when the file
   changes, so that a login costs a stat() and not a parse. */
static struct access_rules *access_rules_cache = NULL;
static struct stat access_rules_cache_st;

static bool access_rules_cache_valid(const char *path, const struct stat *st)
{
	const struct stat *old = &access_rules_cache_st;

	return access_rules_cache != NULL &&
		strcmp(access_rules_get_path(access_rules_cache), path) == 0 &&
		old->st_ino == st->st_ino && old->st_dev == st->st_dev &&
		old->st_size == st->st_size &&
		old->st_mtim.tv_sec == st->st_mtim.tv_sec &&
		old->st_mtim.tv_nsec == st->st_mtim.tv_nsec &&
		old->st_ctim.tv_sec == st->st_ctim.tv_sec &&
		old->st_ctim.tv_nsec == st->st_ctim.tv_nsec;
}

/* Returns the rules, or NULL after logging why they can't be used. */
static struct access_rules *
access_rules_get(struct event *event, const char *path,
		 enum access_rules_load_flags flags)
{
	ARRAY_TYPE(const_string) errors;
	struct access_rules *rules;
	const char *error;
	struct stat st;

	if (stat(path, &st) < 0)
		i_zero(&st);
	else if (access_rules_cache_valid(path, &st) &&
		 access_rules_compiled_file_unchanged(access_rules_cache) &&
		 (flags == 0 || !access_rules_is_compiled(access_rules_cache)))
		return access_rules_cache;

	/* a file that is broken now must not leave the old rules in force:
	   the admin can't tell which ones are */
	access_rules_free(&access_rules_cache);
	t_array_init(&errors, 4);
	if (access_rules_load(path, flags, &rules, &errors) < 0) {
		array_foreach_elem(&errors, error)
			e_error(event, "%s", error);
		return NULL;
	}
	if (access_rules_get_warning(rules) != NULL) {
		e_warning(event, "Using the text rules: %s",
			  access_rules_get_warning(rules));
	}
	access_rules_cache = rules;
	/* The stat from before the read: a file replaced while it was read
	   differs from it at the next login, which reads it again. A file
	   written in the last seconds may be written again within the
	   granularity of its timestamps, with the same stat: read it again
	   until it has been left alone for a while. */
	if (st.st_mtime + ACCESS_RULES_SETTLE_SECS < ioloop_time)
		access_rules_cache_st = st;
	else
		i_zero(&access_rules_cache_st);
	return rules;
}

void access_rules_users_deinit(void)
{
	access_rules_free(&access_rules_cache);
}

struct access_rules_user *access_rules_user_get(struct mail_user *user)
{
	while (user->creator != NULL)
		user = user->creator;
	return ACCESS_RULES_USER_CONTEXT(user);
}

static void
access_rules_decision_copy(pool_t pool, struct access_rules_decision *dest,
			   const struct access_rules_decision *src)
{
	*dest = *src;
	dest->ruleset = p_strdup(pool, src->ruleset);
	dest->reason = p_strdup(pool, src->reason);
	dest->mailboxes = src->mailboxes == NULL ? NULL :
		(const char *const *)p_strarray_dup(pool, src->mailboxes);
	dest->hidden_mailboxes = src->hidden_mailboxes == NULL ? NULL :
		(const char *const *)p_strarray_dup(pool, src->hidden_mailboxes);
}

static void
access_rules_log_decision(struct access_rules_user *auser, const char *stage,
			  const struct access_rules_session_counts *counts)
{
	const struct access_rules_decision *decision = &auser->decision;
	const struct access_rules_session *session = &auser->session;
	const char *action, *where;
	struct event_passthrough *e;

	action = auser->refusal_is_limit ? "limit" :
		access_rule_action_to_string(decision->action);
	if (decision->rule_line != 0)
		where = t_strdup_printf("%s:%u", auser->rules_path,
					decision->rule_line);
	else if (decision->default_line != 0)
		where = t_strdup_printf("%s:%u (default)", auser->rules_path,
					decision->default_line);
	else
		where = t_strdup_printf("%s (built-in default)",
					auser->rules_path);

	e = event_create_passthrough(auser->event)->
		set_name("access_rules_decision")->
		add_str("action", action)->
		add_str("stage", stage)->
		add_str("rule_file", auser->rules_path)->
		add_int("rule_line", decision->rule_line)->
		add_str("ruleset", decision->ruleset)->
		add_str("protocol",
			access_rule_protocol_to_string(session->protocol))->
		add_str("tls", session->tls ? "yes" : "no");
	if (session->remote_ip.family != 0)
		e->add_str("remote_ip", net_ip2addr(&session->remote_ip));
	if (decision->reason != NULL)
		e->add_str("reason", decision->reason);
	if (session->client_name != NULL)
		e->add_str("client_name", session->client_name);
	if (counts != NULL)
		e->add_int("sessions", counts->total);

	if (auser->refusal != NULL) {
		e_info(e->event(), "%s: session refused by %s: %s",
		       action, where, auser->refusal);
	} else if (decision->action == ACCESS_RULE_ACTION_READONLY ||
		   decision->mailboxes != NULL ||
		   decision->hidden_mailboxes != NULL) {
		e_info(e->event(), "%s by %s%s%s", action, where,
		       decision->mailboxes == NULL ? "" :
		       t_strdup_printf(" (visible mailboxes: %s)",
				       t_strarray_join(decision->mailboxes, ",")),
		       decision->hidden_mailboxes == NULL ? "" :
		       t_strdup_printf(" (hidden mailboxes: %s)",
				       t_strarray_join(decision->hidden_mailboxes, ",")));
	} else {
		e_debug(e->event(), "%s by %s", action, where);
	}
}

static const char *
access_rules_session_dir(struct mail_user *user,
			 const struct access_rules_settings *set,
			 const char **error_r)
{
	const char *home;

	if (set->session_dir[0] != '\0')
		return set->session_dir;
	if (mail_user_get_home(user, &home) <= 0) {
		*error_r = "the user has no home directory: set "
			"access_rules_session_dir to count sessions";
		return NULL;
	}
	return t_strconcat(home, "/"ACCESS_RULES_DEFAULT_SESSION_DIR, NULL);
}

/* Applies the matched rule's session caps. Returns 0, or -1 with error_r
   if the sessions can't be counted (which refuses the session). */
static int
access_rules_check_sessions(struct mail_user *user,
			    struct access_rules_user *auser,
			    struct access_rules_session_counts *counts_r,
			    const char **error_r)
{
	const struct access_rules_decision *decision = &auser->decision;
	enum access_rule_protocol protocol = auser->session.protocol;
	unsigned int limit;
	const char *dir;

	dir = access_rules_session_dir(user, auser->set, error_r);
	if (dir == NULL)
		return -1;
	if (access_rules_sessions_register(dir, protocol, &auser->slot,
					   counts_r, error_r) < 0)
		return -1;

	limit = decision->max_protocol_sessions[protocol];
	if (limit != 0 && counts_r->protocol[protocol] > limit) {
		auser->refusal = p_strdup_printf(user->pool,
			"Too many %s sessions (at most %u at a time).",
			protocol == ACCESS_RULE_PROTOCOL_IMAP ? "IMAP" : "POP3",
			limit);
	} else if (decision->max_sessions != 0 &&
		   counts_r->total > decision->max_sessions) {
		auser->refusal = p_strdup_printf(user->pool,
			"Too many sessions (at most %u at a time).",
			decision->max_sessions);
	}
	if (auser->refusal != NULL) {
		auser->refusal_is_limit = TRUE;
		access_rules_sessions_unregister(&auser->slot);
	}
	return 0;
}

/* Evaluates the rules. Returns 0, or -1 with error_r when no decision
   can be made, which must refuse the session. */
static int
access_rules_user_evaluate(struct mail_user *user,
			   struct access_rules_user *auser, const char *stage)
{
	struct access_rules_decision decision;
	struct access_rules_session_counts counts, *countsp = NULL;
	struct access_rules *rules;
	const char *error;
	int ret;

	rules = access_rules_get(auser->event, auser->set->file, 0);
	if (rules == NULL) {
		auser->refusal = "Internal error: invalid access rules.";
		e_error(auser->event, "Refusing the session: the rules file "
			"%s is invalid", auser->set->file);
		return -1;
	}
	auser->session.now = ioloop_time;
	ret = access_rules_evaluate(rules, auser->set->ruleset,
				    &auser->session, &decision, &error);
	if (ret < 0 && access_rules_is_compiled(rules)) {
		/* a damaged compiled file: the text still has the answer */
		e_warning(auser->event, "Using the text rules: %s", error);
		rules = access_rules_get(auser->event, auser->set->file,
					 ACCESS_RULES_LOAD_FLAG_TEXT);
		if (rules == NULL) {
			auser->refusal = "Internal error: invalid access rules.";
			e_error(auser->event, "Refusing the session: the "
				"rules file %s is invalid", auser->set->file);
			return -1;
		}
		ret = access_rules_evaluate(rules, auser->set->ruleset,
					    &auser->session, &decision, &error);
	}
	if (ret < 0) {
		auser->refusal = "Internal error: invalid access rules.";
		e_error(auser->event, "Refusing the session: "
			"access_rules_ruleset=%s: %s in %s",
			auser->set->ruleset, error, auser->set->file);
		return -1;
	}
	access_rules_decision_copy(user->pool, &auser->decision, &decision);
	auser->globs_valid = FALSE;
	auser->refusal = NULL;

	if (decision.action == ACCESS_RULE_ACTION_DENY) {
		auser->refusal = decision.reason != NULL ?
			auser->decision.reason : ACCESS_RULES_DEFAULT_REFUSAL;
	} else if (auser->slot == NULL &&
		   access_rules_set_has_session_caps(rules, auser->set->ruleset)) {
		/* every session of a user whose rule set has caps is
		   counted, even one admitted by a rule without a cap */
		if (access_rules_check_sessions(user, auser, &counts,
						&error) < 0) {
			auser->refusal = "Internal error: can't count sessions.";
			e_error(auser->event, "Refusing the session: "
				"can't count sessions: %s", error);
			return -1;
		}
		countsp = &counts;
	}
	access_rules_log_decision(auser, stage, countsp);
	return 0;
}

static void access_rules_user_deinit(struct mail_user *user)
{
	struct access_rules_user *auser = ACCESS_RULES_USER_CONTEXT(user);

	access_rules_sessions_unregister(&auser->slot);
	event_unref(&auser->event);
	auser->module_ctx.super.deinit(user);
}

static void
access_rules_session_init(struct mail_user *user,
			  struct access_rules_user *auser,
			  enum access_rule_protocol protocol)
{
	struct access_rules_session *session = &auser->session;
	const char *name, *version;

	session->protocol = protocol;
	session->username = user->username;
	session->groups = auser->set->groups;
	if (user->conn.remote_ip != NULL)
		session->remote_ip = *user->conn.remote_ip;
	session->local_port = user->conn.local_port;
	session->tls = user->conn.ssl_secured;
	/* behind a proxy the connection is the proxy's; the proxy's view
	   of the client comes as a forwarded field */
	if (strcmp(auser->set->client_tls, "tls") == 0)
		session->tls = TRUE;
	else if (strcmp(auser->set->client_tls, "plaintext") == 0)
		session->tls = FALSE;
	if (auser->set->client_id[0] != '\0') {
		access_rules_parse_client_id(auser->set->client_id,
					     &name, &version);
		/* %{client_id} of a client that sent no ID before login
		   expands to "", which Dovecot hands over as "yes": only an
		   ID that names the client counts, or the first ID after
		   login would be ignored */
		if (name != NULL || version != NULL) {
			session->client_name = p_strdup(user->pool, name);
			session->client_version =
				p_strdup(user->pool, version);
			auser->client_id_used = TRUE;
		}
	}
}

void access_rules_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct access_rules_user *auser;
	enum access_rule_protocol protocol;
	const char *error;

	/* LMTP delivery, doveadm and the users behind shared mailboxes are
	   never refused by these rules */
	if (user->autocreated || user->service == NULL ||
	    access_rule_protocol_parse(user->service, &protocol) < 0)
		return;

	auser = p_new(user->pool, struct access_rules_user, 1);
	auser->user = user;
	auser->module_ctx.super = *v;
	user->vlast = &auser->module_ctx.super;
	v->deinit = access_rules_user_deinit;
	MODULE_CONTEXT_SET(user, access_rules_user_module, auser);

	auser->event = event_create(user->event);
	event_add_category(auser->event, &event_category_access_rules);
	event_set_append_log_prefix(auser->event, "access_rules: ");
	/* mail_debug=yes from userdb doesn't reach the user's event */
	if (user->mail_debug)
		event_set_forced_debug(auser->event, TRUE);

	if (access_rules_settings_read(user, &auser->set, &error) < 0) {
		/* fail closed: the session fails with an internal error */
		e_error(auser->event, "Refusing the session: %s", error);
		user->error = p_strdup_printf(user->pool, "access_rules: %s",
					      error);
		return;
	}
	auser->rules_path = auser->set->file;
	access_rules_session_init(user, auser, protocol);
	if (access_rules_user_evaluate(user, auser, "login") < 0) {
		user->error = p_strdup_printf(user->pool,
			"access_rules: refusing the session, see the log");
	}
}

void access_rules_user_client_id(struct mail_user *user,
				 const char *name, const char *version)
{
	struct access_rules_user *auser = access_rules_user_get(user);

	if (auser == NULL || auser->client_id_used || auser->refusal != NULL)
		return;
	auser->client_id_used = TRUE;
	auser->session.client_name = p_strdup(user->pool, name);
	auser->session.client_version = p_strdup(user->pool, version);
	if (!auser->decision.depends_on_client_id)
		return;
	/* a failure sets the refusal, which the caller acts on */
	(void)access_rules_user_evaluate(user, auser, "id");
}

bool access_rules_user_is_readonly(const struct access_rules_user *auser)
{
	return auser->decision.action != ACCESS_RULE_ACTION_ALLOW ||
		auser->refusal != NULL;
}

const char *
access_rules_user_readonly_error(const struct access_rules_user *auser)
{
	if (auser->decision.reason != NULL)
		return t_strdup_printf("Read-only session: %s",
				       auser->decision.reason);
	return "Read-only session: changes are not allowed from here.";
}

bool access_rules_user_mailbox_visible(struct access_rules_user *auser,
				       char sep, const char *vname)
{
	const struct access_rules_decision *decision = &auser->decision;

	if (auser->refusal != NULL)
		return FALSE;
	if (decision->mailboxes == NULL && decision->hidden_mailboxes == NULL)
		return TRUE;
	if (auser->globs_sep != sep || !auser->globs_valid) {
		/* rebuilt only when the decision or the separator
		   changes, so the user's pool is the right owner */
		pool_t pool = auser->user->pool;

		auser->visible_glob = decision->mailboxes == NULL ? NULL :
			imap_match_init_multiple(pool, decision->mailboxes,
						 TRUE, sep);
		auser->hidden_glob = decision->hidden_mailboxes == NULL ? NULL :
			imap_match_init_multiple(pool,
				decision->hidden_mailboxes, TRUE, sep);
		auser->globs_sep = sep;
		auser->globs_valid = TRUE;
	}
	if (auser->visible_glob != NULL &&
	    imap_match(auser->visible_glob, vname) != IMAP_MATCH_YES)
		return FALSE;
	return auser->hidden_glob == NULL ||
		imap_match(auser->hidden_glob, vname) != IMAP_MATCH_YES;
}
