#ifndef FTS_LMDB_GRAMS_H
#define FTS_LMDB_GRAMS_H

/* The trigram filter of a mailbox's tokens. A substring of three bytes
   or more can only be in a token that holds each of its trigrams, so
   for every trigram of the mailbox's tokens the filter keeps the first
   three bytes (the prefix) of the tokens that hold it. A substring
   search then reads only the blocks of the prefixes that all its
   trigrams share, instead of every block (docs/fts_lmdb.md
   "Trigrams").

   The lists only grow: a prefix whose tokens were purged since costs a
   block read, never a wrong answer, while a missing prefix would be
   one. So a new token's trigrams are written in the transaction that
   writes its block, and a page that the chain of pages names but the
   database lacks is damage. A mailbox without a head has no filter,
   and its searches scan every block: one whose head was lost, or one
   below fts_lmdb_trigram_min_blocks blocks, for an admin who wants the
   smaller index (by default every mailbox has a filter: about a third
   of a small mailbox's index, docs/fts_lmdb.md "Size"). */

#define FTS_LMDB_GRAMS_MIN_BLOCKS 0

#include "fts-lmdb-grams-page.h"

struct fts_lmdb_db;
struct fts_lmdb_grams;

struct fts_lmdb_grams *fts_lmdb_grams_init(void);
void fts_lmdb_grams_deinit(struct fts_lmdb_grams **grams);

/* A token new to the mailbox. Tokens added in ascending order cost the
   least memory. */
void fts_lmdb_grams_add_token(struct fts_lmdb_grams *grams,
			      const unsigned char *token, size_t size);
/* Forgets the tokens added so far. */
void fts_lmdb_grams_reset(struct fts_lmdb_grams *grams);
/* Adds what fts_lmdb_grams_add_token() collected to the mailbox's
   filter, in the open write transaction; creates the filter if the
   mailbox has none (then the tokens must be all of the mailbox's). */
int fts_lmdb_grams_write(struct fts_lmdb_grams *grams,
			 struct fts_lmdb_db *db, uint32_t box_id,
			 const char **error_r);
/* 1 if the mailbox has a filter, 0 if not, -1 on error or damage */
int fts_lmdb_grams_exist(struct fts_lmdb_db *db, uint32_t box_id,
			 const char **error_r);

/* The prefixes, ascending, of the tokens that may contain q: 1 with
   prefixes_r set (maybe empty), 0 if the filter doesn't apply (q is
   shorter than a trigram, or the mailbox has no filter), -1 on error
   or damage. */
int fts_lmdb_grams_find(struct fts_lmdb_db *db, uint32_t box_id,
			const unsigned char *q, size_t q_size,
			ARRAY_TYPE(fts_lmdb_prefix) *prefixes_r,
			const char **error_r);

#endif
