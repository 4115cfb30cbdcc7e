/* Reads the access_rules_* settings of a user. */

#include "lib.h"
#include "array.h"
#include "str.h"
#include "mail-user.h"
#include "access-rules.h"
#include "access-rules-settings.h"

struct access_rules_setting_def {
	const char *name;
	const char *default_value;
	size_t offset;
};

#define DEF(field, default_value) \
	{ "access_rules_"#field, default_value, \
	  offsetof(struct access_rules_settings, field) }
static const struct access_rules_setting_def access_rules_setting_defs[] = {
	DEF(file, NULL),
	DEF(ruleset, ACCESS_RULES_DEFAULT_SET),
	DEF(session_dir, ""),
	DEF(client_id, ""),
	DEF(client_tls, ""),
};
#undef DEF

int access_rules_settings_read(struct mail_user *user,
			       const struct access_rules_settings **set_r,
			       const char **error_r)
{
	struct access_rules_settings *set;
	const char *value, *groups;
	unsigned int i;

	set = p_new(user->pool, struct access_rules_settings, 1);
	for (i = 0; i < N_ELEMENTS(access_rules_setting_defs); i++) {
		const struct access_rules_setting_def *def =
			&access_rules_setting_defs[i];

		value = mail_user_plugin_getenv(user, def->name);
		if (value == NULL)
			value = def->default_value;
		*(const char **)PTR_OFFSET(set, def->offset) =
			p_strdup(user->pool, value);
	}

	if (set->file == NULL || set->file[0] == '\0') {
		*error_r = "access_rules_file is not set, refusing access "
			"(set it to the rules file's path)";
		return -1;
	}
	if (set->file[0] != '/') {
		*error_r = t_strdup_printf(
			"access_rules_file=%s: must be an absolute path",
			set->file);
		return -1;
	}
	if (set->ruleset[0] == '\0') {
		*error_r = "access_rules_ruleset is empty";
		return -1;
	}
	if (set->session_dir[0] != '\0' && set->session_dir[0] != '/') {
		*error_r = t_strdup_printf(
			"access_rules_session_dir=%s: must be an absolute path",
			set->session_dir);
		return -1;
	}

	groups = mail_user_plugin_getenv(user, "access_rules_groups");
	if (groups != NULL && groups[0] != '\0') {
		const char *const *list = t_strsplit_spaces(groups, ", ");

		set->groups = (const char *const *)
			p_strarray_dup(user->pool, list);
	}
	*set_r = set;
	return 0;
}

/* Reads one IMAP string, atom or NIL. Returns the value (NULL for NIL)
   and moves *p past it; sets *ok_r = FALSE at the end of the input. */
static const char *
access_rules_client_id_token(const char **p, bool *ok_r)
{
	const char *start;
	string_t *str;

	while (**p == ' ' || **p == '(' || **p == ')')
		(*p)++;
	if (**p == '\0') {
		*ok_r = FALSE;
		return NULL;
	}
	*ok_r = TRUE;
	if (**p == '"') {
		str = t_str_new(64);
		for ((*p)++; **p != '"' && **p != '\0'; (*p)++) {
			if (**p == '\\' && (*p)[1] != '\0')
				(*p)++;
			str_append_c(str, **p);
		}
		if (**p == '"')
			(*p)++;
		return str_c(str);
	}
	start = *p;
	while (**p != '\0' && **p != ' ' && **p != ')')
		(*p)++;
	if (*p - start == 3 && strncasecmp(start, "NIL", 3) == 0)
		return NULL;
	return t_strdup_until(start, *p);
}

void access_rules_parse_client_id(const char *id, const char **name_r,
				  const char **version_r)
{
	const char *p = id, *key, *value;
	bool ok;

	*name_r = NULL;
	*version_r = NULL;
	for (;;) {
		key = access_rules_client_id_token(&p, &ok);
		if (!ok)
			break;
		value = access_rules_client_id_token(&p, &ok);
		if (!ok || key == NULL)
			break;
		if (strcasecmp(key, "name") == 0 && *name_r == NULL)
			*name_r = value;
		else if (strcasecmp(key, "version") == 0 && *version_r == NULL)
			*version_r = value;
	}
}
