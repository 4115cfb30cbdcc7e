/* Searching only the index's candidates.

   The fts plugin applies a lookup's answer message by message: Dovecot's
   search loop still sets up every message of the mailbox (mail_set_seq,
   the fts plugin's per-message work) only to learn from the answer that
   it doesn't match. At 100,000 messages that loop costs about 20 ms of
   every search, whatever the index found. This mailbox layer sits above
   the fts plugin's and moves the search's position past every message
   that the answers rule out, so the loop runs over the candidates only.

   Each lookup of one level of the search's arguments (fts-lmdb-lookup.c)
   tells us which messages it left possible: its definite and maybe
   answers, plus everything above the index's last UID, which the fts
   plugin searches the slow way. A message is skipped only where the
   arguments as a whole can't match it: outside an answered level that
   must hold (the top level's AND, a non-negated sub-list's AND, an OR
   whose every member is answered or itself narrowed). Everything else
   keeps Dovecot's own loop, so an answer can only come out faster, never
   different. */

#include "lib.h"
#include "array.h"
#include "seq-range-array.h"
#include "mail-index.h"
#include "mail-search.h"
#include "mail-storage-private.h"
#include "fts-api-private.h"
#include "fts-storage.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-search.h"

#define FTS_LMDB_SEARCH_CONTEXT(obj) \
	MODULE_CONTEXT(obj, fts_lmdb_storage_module)
#define FTS_LMDB_SEARCH_CONTEXT_REQUIRE(obj) \
	MODULE_CONTEXT_REQUIRE(obj, fts_lmdb_storage_module)

/* Virtual mailboxes look up their backend mailboxes without searching
   them, so nothing would ever take those levels away. */
#define FTS_LMDB_SEARCH_MAX_LEVELS 64

#define FTS_LMDB_SEARCH_IS_LIST(arg) \
	((arg)->type == SEARCH_SUB || (arg)->type == SEARCH_OR)

struct fts_lmdb_search_level {
	const struct mail_search_arg *args;
	ARRAY(const struct mail_search_arg *) answered;
	/* UIDs that may match the level's answered args */
	ARRAY_TYPE(seq_range) uids;
};

struct fts_lmdb_search_mailbox {
	union mailbox_module_context module_ctx;
	struct fts_lmdb_backend *backend;

	/* levels answered since the last search began */
	pool_t pool;
	ARRAY(struct fts_lmdb_search_level) levels;
};

struct fts_lmdb_search_context {
	union mail_search_module_context module_ctx;

	bool planned, narrowed;
	ARRAY_TYPE(seq_range) seqs;
	unsigned int idx;
	uint32_t last_seq;
};

static MODULE_CONTEXT_DEFINE_INIT(fts_lmdb_storage_module,
				  &mail_storage_module_register);

static void fts_lmdb_search_forget(struct fts_lmdb_search_mailbox *sbox)
{
	p_clear(sbox->pool);
	p_array_init(&sbox->levels, sbox->pool, 8);
}

void fts_lmdb_search_level_answered(struct mailbox *box,
				    const struct mail_search_arg *args,
				    const ARRAY_TYPE(seq_range) *possible_uids,
				    uint32_t last_uid)
{
	struct fts_lmdb_search_mailbox *sbox = FTS_LMDB_SEARCH_CONTEXT(box);
	struct fts_lmdb_search_level *level;
	const struct mail_search_arg *arg;

	if (sbox == NULL)
		return;
	if (array_count(&sbox->levels) >= FTS_LMDB_SEARCH_MAX_LEVELS)
		fts_lmdb_search_forget(sbox);

	level = array_append_space(&sbox->levels);
	level->args = args;
	p_array_init(&level->answered, sbox->pool, 4);
	for (arg = args; arg != NULL; arg = arg->next) {
		if (arg->match_always)
			array_push_back(&level->answered, &arg);
	}
	p_array_init(&level->uids, sbox->pool,
		     array_count(possible_uids) + 1);
	array_append_array(&level->uids, possible_uids);
	if (last_uid < (uint32_t)-1)
		seq_range_array_add_range(&level->uids, last_uid + 1,
					  (uint32_t)-1);
}

static const struct fts_lmdb_search_level *
fts_lmdb_search_level_find(struct fts_lmdb_search_mailbox *sbox,
			   const struct mail_search_arg *args)
{
	const struct fts_lmdb_search_level *levels;
	unsigned int i;

	/* the newest answer, if a search looked its args up twice */
	levels = array_get(&sbox->levels, &i);
	while (i > 0) {
		if (levels[--i].args == args)
			return &levels[i];
	}
	return NULL;
}

static bool
fts_lmdb_search_is_answered(const struct fts_lmdb_search_level *level,
			    const struct mail_search_arg *arg)
{
	const struct mail_search_arg *const *answered;

	if (level == NULL)
		return FALSE;
	array_foreach(&level->answered, answered) {
		if (*answered == arg)
			return TRUE;
	}
	return FALSE;
}

/* Fills possible with the UIDs that args (ANDed if and_args, else ORed)
   may match, and returns TRUE, or returns FALSE if it may be any. */
static bool
fts_lmdb_search_possible(struct fts_lmdb_search_mailbox *sbox,
			 const struct mail_search_arg *args, bool and_args,
			 ARRAY_TYPE(seq_range) *possible)
{
	const struct fts_lmdb_search_level *level;
	const struct mail_search_arg *arg;
	ARRAY_TYPE(seq_range) sub;
	bool narrowed = FALSE;

	level = fts_lmdb_search_level_find(sbox, args);
	if (and_args) {
		if (level != NULL && array_count(&level->answered) > 0) {
			array_append_array(possible, &level->uids);
			narrowed = TRUE;
		}
		for (arg = args; arg != NULL; arg = arg->next) {
			if (!FTS_LMDB_SEARCH_IS_LIST(arg) || arg->match_not)
				continue;
			t_array_init(&sub, 8);
			if (!fts_lmdb_search_possible(sbox, arg->value.subargs,
						      arg->type == SEARCH_SUB,
						      &sub))
				continue;
			if (narrowed)
				seq_range_array_intersect(possible, &sub);
			else
				array_append_array(possible, &sub);
			narrowed = TRUE;
		}
		return narrowed;
	}

	for (arg = args; arg != NULL; arg = arg->next) {
		if (fts_lmdb_search_is_answered(level, arg))
			continue;
		if (!FTS_LMDB_SEARCH_IS_LIST(arg) || arg->match_not)
			return FALSE;
		t_array_init(&sub, 8);
		if (!fts_lmdb_search_possible(sbox, arg->value.subargs,
					      arg->type == SEARCH_SUB, &sub))
			return FALSE;
		seq_range_array_merge(possible, &sub);
	}
	if (level != NULL)
		seq_range_array_merge(possible, &level->uids);
	return TRUE;
}

static void fts_lmdb_search_plan(struct fts_lmdb_search_mailbox *sbox,
				 struct fts_lmdb_search_context *sctx,
				 struct mail_search_context *ctx)
{
	struct mail_index_view *view = ctx->transaction->view;
	ARRAY_TYPE(seq_range) uids;
	const struct seq_range *range;
	uint32_t seq1, seq2;

	sctx->planned = TRUE;
	/* a search result being updated needs to see its non-matches */
	if (ctx->update_result != NULL)
		return;
	T_BEGIN {
		t_array_init(&uids, 64);
		if (fts_lmdb_search_possible(sbox, ctx->args->args, TRUE,
					     &uids)) {
			sctx->narrowed = TRUE;
			array_foreach(&uids, range) {
				mail_index_lookup_seq_range(view, range->seq1,
							    range->seq2,
							    &seq1, &seq2);
				if (seq1 != 0)
					seq_range_array_add_range(&sctx->seqs,
								  seq1, seq2);
			}
		}
	} T_END;
	sctx->last_seq = mail_index_view_get_messages_count(view);
	if (sctx->narrowed) {
		e_debug(sbox->backend->event,
			"Search of %s steps through %u of %u messages",
			mailbox_get_vname(ctx->transaction->box),
			seq_range_count(&sctx->seqs), sctx->last_seq);
	}
}

/* Moves ctx->seq so that the core's next step lands on the next
   candidate. The first step is always the core's own: only it knows
   where the search range starts. */
static void fts_lmdb_search_skip(struct fts_lmdb_search_context *sctx,
				 struct mail_search_context *ctx)
{
	const struct seq_range *range;
	unsigned int count;

	range = array_get(&sctx->seqs, &count);
	while (sctx->idx < count && range[sctx->idx].seq2 <= ctx->seq)
		sctx->idx++;
	if (sctx->idx == count) {
		/* the next step ends the search */
		if (ctx->seq < sctx->last_seq)
			ctx->seq = sctx->last_seq;
	} else if (range[sctx->idx].seq1 > ctx->seq + 1) {
		ctx->seq = range[sctx->idx].seq1 - 1;
	}
}

static bool fts_lmdb_search_next_update_seq(struct mail_search_context *ctx)
{
	struct fts_lmdb_search_mailbox *sbox =
		FTS_LMDB_SEARCH_CONTEXT_REQUIRE(ctx->transaction->box);
	struct fts_lmdb_search_context *sctx = FTS_LMDB_SEARCH_CONTEXT(ctx);

	/* The lookups are done by the first step: in search_init, or,
	   when the search had to index first, just before this step. */
	if (sctx != NULL) {
		if (!sctx->planned)
			fts_lmdb_search_plan(sbox, sctx, ctx);
		if (sctx->narrowed && ctx->seq != 0)
			fts_lmdb_search_skip(sctx, ctx);
	}
	return sbox->module_ctx.super.search_next_update_seq(ctx);
}

static struct mail_search_context *
fts_lmdb_search_init(struct mailbox_transaction_context *t,
		     struct mail_search_args *args,
		     const enum mail_sort_type *sort_program,
		     enum mail_fetch_field wanted_fields,
		     struct mailbox_header_lookup_ctx *wanted_headers)
{
	struct fts_lmdb_search_mailbox *sbox =
		FTS_LMDB_SEARCH_CONTEXT_REQUIRE(t->box);
	struct fts_lmdb_search_context *sctx;
	struct mail_search_context *ctx;

	fts_lmdb_search_forget(sbox);
	ctx = sbox->module_ctx.super.search_init(t, args, sort_program,
						 wanted_fields,
						 wanted_headers);
	sctx = i_new(struct fts_lmdb_search_context, 1);
	i_array_init(&sctx->seqs, 64);
	MODULE_CONTEXT_SET(ctx, fts_lmdb_storage_module, sctx);
	return ctx;
}

static int fts_lmdb_search_deinit(struct mail_search_context *ctx)
{
	struct fts_lmdb_search_mailbox *sbox =
		FTS_LMDB_SEARCH_CONTEXT_REQUIRE(ctx->transaction->box);
	struct fts_lmdb_search_context *sctx =
		FTS_LMDB_SEARCH_CONTEXT_REQUIRE(ctx);

	array_free(&sctx->seqs);
	i_free(sctx);
	return sbox->module_ctx.super.search_deinit(ctx);
}

static void fts_lmdb_search_mailbox_free(struct mailbox *box)
{
	struct fts_lmdb_search_mailbox *sbox =
		FTS_LMDB_SEARCH_CONTEXT_REQUIRE(box);

	/* sbox is in box->pool, which super.free() releases */
	pool_unref(&sbox->pool);
	sbox->module_ctx.super.free(box);
}

void fts_lmdb_search_mailbox_allocated(struct mailbox *box)
{
	struct mailbox_vfuncs *v = box->vlast;
	struct fts_lmdb_search_mailbox *sbox;
	struct fts_backend *backend;

	if (box->virtual_vfuncs != NULL)
		return;
	backend = fts_list_backend(box->list);
	if (backend == NULL ||
	    strcmp(backend->name, fts_backend_lmdb.name) != 0)
		return;

	sbox = p_new(box->pool, struct fts_lmdb_search_mailbox, 1);
	sbox->module_ctx.super = *v;
	box->vlast = &sbox->module_ctx.super;
	sbox->backend = container_of(backend, struct fts_lmdb_backend,
				     backend);
	sbox->pool = pool_alloconly_create("fts-lmdb search levels", 1024);
	p_array_init(&sbox->levels, sbox->pool, 8);

	v->search_init = fts_lmdb_search_init;
	v->search_deinit = fts_lmdb_search_deinit;
	v->search_next_update_seq = fts_lmdb_search_next_update_seq;
	v->free = fts_lmdb_search_mailbox_free;
	MODULE_CONTEXT_SET(box, fts_lmdb_storage_module, sbox);
}
