/* The fts_lmdb_* settings. A bad value fails the backend's init, and the
   fts plugin then searches without it: slower, never wrong. */

#include "lib.h"
#include "str.h"
#include "mail-user.h"
#include "fts-lmdb-grams.h"
#include "fts-lmdb-settings.h"

#define FTS_LMDB_FORMAT_VERSION "10"

static const char *const fts_lmdb_default_headers =
	"From To Cc Bcc Subject Message-ID In-Reply-To References "
	"Reply-To Sender List-Id X-Mailer";

/* FROM, TO, CC and BCC compare with the parsed and rewritten address
   list, not with the header as written */
static const char *const fts_lmdb_address_headers[] = {
	"From", "To", "Cc", "Bcc"
};
#define FTS_LMDB_FIRST_ADDRESS_BIT \
	(FTS_LMDB_FIELD_FIRST_HEADER_BIT + FTS_LMDB_MAX_HEADERS)

static int
fts_lmdb_setting_uint(struct mail_user *user, const char *name,
		      unsigned int def, unsigned int min, unsigned int max,
		      unsigned int *value_r, const char **error_r)
{
	const char *value = mail_user_plugin_getenv(user, name);

	if (value == NULL || value[0] == '\0') {
		*value_r = def;
		return 0;
	}
	if (str_to_uint(value, value_r) < 0 || *value_r < min ||
	    *value_r > max) {
		*error_r = t_strdup_printf("%s=%s: must be a number "
					   "from %u to %u", name, value,
					   min, max);
		return -1;
	}
	return 0;
}

static int
fts_lmdb_setting_bool(struct mail_user *user, const char *name, bool def,
		      bool *value_r, const char **error_r)
{
	const char *value = mail_user_plugin_getenv(user, name);

	if (value == NULL || value[0] == '\0')
		*value_r = def;
	else if (strcasecmp(value, "yes") == 0)
		*value_r = TRUE;
	else if (strcasecmp(value, "no") == 0)
		*value_r = FALSE;
	else {
		*error_r = t_strdup_printf("%s=%s: must be yes or no",
					   name, value);
		return -1;
	}
	return 0;
}

static bool fts_lmdb_header_name_valid(const char *name)
{
	const char *p;

	/* RFC 5322 field name: printable ASCII except ':' */
	for (p = name; *p != '\0'; p++) {
		if (*p <= ' ' || *p >= 127 || *p == ':')
			return FALSE;
	}
	return name[0] != '\0';
}

int fts_lmdb_settings_read(struct mail_user *user, pool_t pool,
			   struct fts_lmdb_settings *set_r,
			   const char **error_r)
{
	const char *value, *const *names;
	string_t *format;
	unsigned int i, j;

	i_zero(set_r);
	value = mail_user_plugin_getenv(user, "fts_lmdb_path");
	if (value != NULL && value[0] != '\0') {
		if (value[0] != '/') {
			*error_r = t_strdup_printf(
				"fts_lmdb_path=%s: must be an absolute path",
				value);
			return -1;
		}
		set_r->path = p_strdup(pool, value);
	}
	if (fts_lmdb_setting_uint(user, "fts_lmdb_batch_mb", 64, 1, 1024,
				  &set_r->batch_mb, error_r) < 0 ||
	    fts_lmdb_setting_uint(user, "fts_lmdb_map_mb", 64, 1, 1024 * 1024,
				  &set_r->map_mb, error_r) < 0 ||
	    fts_lmdb_setting_uint(user, "fts_lmdb_max_mail_tokens", 200000,
				  100, 100000000, &set_r->max_mail_tokens,
				  error_r) < 0 ||
	    fts_lmdb_setting_uint(user, "fts_lmdb_trigram_min_blocks",
				  FTS_LMDB_GRAMS_MIN_BLOCKS, 0, 100000000,
				  &set_r->trigram_min_blocks, error_r) < 0 ||
	    fts_lmdb_setting_bool(user, "fts_lmdb_partial_fetch", TRUE,
				  &set_r->partial_fetch, error_r) < 0)
		return -1;

	value = mail_user_plugin_getenv(user, "fts_lmdb_headers");
	if (value == NULL)
		value = fts_lmdb_default_headers;
	names = t_strsplit_spaces(value, " ,");
	format = t_str_new(128);
	str_append(format, FTS_LMDB_FORMAT_VERSION);
	for (i = 0; names[i] != NULL; i++) {
		if (!fts_lmdb_header_name_valid(names[i])) {
			*error_r = t_strdup_printf(
				"fts_lmdb_headers: invalid header name '%s'",
				names[i]);
			return -1;
		}
		for (j = 0; j < set_r->headers_count; j++) {
			if (strcasecmp(set_r->headers[j], names[i]) == 0)
				break;
		}
		if (j < set_r->headers_count)
			continue;
		if (set_r->headers_count == FTS_LMDB_MAX_HEADERS) {
			*error_r = t_strdup_printf(
				"fts_lmdb_headers: more than %u headers",
				FTS_LMDB_MAX_HEADERS);
			return -1;
		}
		set_r->headers[set_r->headers_count++] =
			p_strdup(pool, t_str_lcase(names[i]));
		str_printfa(format, " %s", t_str_lcase(names[i]));
	}
	set_r->format = p_strdup(pool, str_c(format));
	return 0;
}

uint32_t fts_lmdb_settings_header_mask(const struct fts_lmdb_settings *set,
				       const char *name)
{
	unsigned int i;

	for (i = 0; i < set->headers_count; i++) {
		if (strcasecmp(set->headers[i], name) == 0)
			return 1U << (FTS_LMDB_FIELD_FIRST_HEADER_BIT + i);
	}
	return 0;
}

uint32_t fts_lmdb_settings_address_mask(const struct fts_lmdb_settings *set,
					const char *name)
{
	unsigned int i;

	if (fts_lmdb_settings_header_mask(set, name) == 0)
		return 0;
	for (i = 0; i < N_ELEMENTS(fts_lmdb_address_headers); i++) {
		if (strcasecmp(fts_lmdb_address_headers[i], name) == 0)
			return 1U << (FTS_LMDB_FIRST_ADDRESS_BIT + i);
	}
	return 0;
}
