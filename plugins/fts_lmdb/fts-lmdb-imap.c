/* The IMAP half of partial fetch. BINARY slices seek through the mail
   vfuncs alone, but a BODY slice of mail stored with LF line ends is
   positioned by IMAP itself, by counting line ends from the section's
   start. This wraps the BODY fetch handler so that, just before IMAP
   opens a slice, the mail can tell IMAP's partial-fetch cache where the
   nearest checkpoint is. The plugin is loaded by every mail process, so
   the imap binary's functions are weak references, as in access_rules. */

#include "imap-common.h"
#include "imap-fetch.h"
#include "fts-lmdb-mail.h"
#include "fts-lmdb-imap.h"

#pragma weak imap_fetch_handler_lookup
#pragma weak imap_fetch_handler_unregister
#pragma weak imap_fetch_handlers_register

struct fts_lmdb_imap_body {
	imap_fetch_handler_t *handler;
	void *context;
	const char *section;
	uoff_t offset;
};

static struct imap_fetch_handler fts_lmdb_imap_orig_body;
static bool fts_lmdb_imap_installed;

static int fts_lmdb_imap_fetch_body(struct imap_fetch_context *ctx,
				    struct mail *mail, void *context)
{
	struct fts_lmdb_imap_body *body = context;

	if (mail != NULL)
		fts_lmdb_mail_seek_hint(mail, body->section, body->offset);
	return body->handler(ctx, mail, body->context);
}

/* "BODY[section]<offset.size>" -> section and offset; FALSE if it isn't
   a slice that starts past 0 */
static bool fts_lmdb_imap_parse_slice(const char *name, pool_t pool,
				      const char **section_r,
				      uoff_t *offset_r)
{
	const char *start, *end, *p;
	uoff_t offset = 0;

	start = strchr(name, '[');
	end = start == NULL ? NULL : strchr(start, ']');
	if (end == NULL || end[1] != '<')
		return FALSE;
	for (p = end + 2; *p >= '0' && *p <= '9'; p++) {
		if (offset > (UOFF_T_MAX - 9) / 10)
			return FALSE;
		offset = offset * 10 + (*p - '0');
	}
	if (*p != '.' || offset == 0)
		return FALSE;
	*section_r = p_strdup_until(pool, start + 1, end);
	*offset_r = offset;
	return TRUE;
}

static bool fts_lmdb_imap_body_init(struct imap_fetch_init_context *ctx)
{
	struct imap_fetch_context_handler *handlers;
	struct fts_lmdb_imap_body *body;
	unsigned int count, old_count;
	const char *section;
	uoff_t offset;
	bool slice;

	old_count = array_count(&ctx->fetch_ctx->handlers);
	/* BODY[HEADER.FIELDS (...)] has its list in the next argument and
	   is never large */
	slice = fts_lmdb_imap_parse_slice(ctx->name, ctx->pool, &section,
					  &offset);
	if (!fts_lmdb_imap_orig_body.init(ctx))
		return FALSE;
	handlers = array_get_modifiable(&ctx->fetch_ctx->handlers, &count);
	if (!slice || count != old_count + 1)
		return TRUE;

	body = p_new(ctx->pool, struct fts_lmdb_imap_body, 1);
	body->handler = handlers[count - 1].handler;
	body->context = handlers[count - 1].context;
	body->section = section;
	body->offset = offset;
	handlers[count - 1].handler = fts_lmdb_imap_fetch_body;
	handlers[count - 1].context = body;
	return TRUE;
}

static const struct imap_fetch_handler fts_lmdb_imap_body_handler = {
	.name = "BODY",
	.init = fts_lmdb_imap_body_init,
};

void fts_lmdb_imap_init(void)
{
	const struct imap_fetch_handler *orig;

	if (imap_fetch_handler_lookup == NULL)
		return;
	orig = imap_fetch_handler_lookup("BODY");
	if (orig == NULL)
		return;
	fts_lmdb_imap_orig_body = *orig;
	imap_fetch_handler_unregister("BODY");
	imap_fetch_handlers_register(&fts_lmdb_imap_body_handler, 1);
	fts_lmdb_imap_installed = TRUE;
}

void fts_lmdb_imap_deinit(void)
{
	if (!fts_lmdb_imap_installed)
		return;
	imap_fetch_handler_unregister("BODY");
	imap_fetch_handlers_register(&fts_lmdb_imap_orig_body, 1);
	fts_lmdb_imap_installed = FALSE;
}
