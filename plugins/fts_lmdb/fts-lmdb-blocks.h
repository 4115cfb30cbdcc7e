#ifndef FTS_LMDB_BLOCKS_H
#define FTS_LMDB_BLOCKS_H

/* A mailbox's tokens, sorted, in blocks of about FTS_LMDB_BLOCK_MAX
   bytes, each keyed by the lowest token it may hold and naming the key
   of the block after it. A block keeps its tokens' text together, each
   after what it shares with the one before, and their posting lists
   after it; a read decodes the text into one string, each token
   followed by '\n', for a substring search to scan. One LMDB entry per block instead of
   per token is what keeps the index small (docs/fts_lmdb.md "Size").

   The chain of keys is what makes a lost block visible: a lookup by key
   lands on the block whose range holds the token, and a scan must find
   every block the previous one names. */

#include "fts-lmdb-postings.h"
#include "fts-lmdb-block-value.h"

struct fts_lmdb_db;

/* A posting list longer than this is kept under its own key in the
   tokens database: a common token would otherwise make every batch
   rewrite its block with a growing list. */
#define FTS_LMDB_BLOCK_POSTINGS_MAX 128

enum fts_lmdb_match {
	FTS_LMDB_MATCH_CONTAINS,
	FTS_LMDB_MATCH_SUFFIX,
	FTS_LMDB_MATCH_PREFIX,
	FTS_LMDB_MATCH_EXACT,
};

typedef int fts_lmdb_block_entry_callback_t(
	void *context, const struct fts_lmdb_block_entry *entry,
	const char **error_r);

/* A substring search reads the blocks of the prefixes that the trigram
   filter names while they are at most this share of the blocks, else
   every block: a block looked up by key costs a walk down the tree, a
   block of a scan the next step of a cursor. */
#define FTS_LMDB_BLOCKS_FILTER_RATIO 4

/* Calls callback for each token that matches q. block_count is the
   mailbox record's count of blocks. chain_checked_r: whether the lookup
   walked the whole chain of blocks (and found it complete). */
int fts_lmdb_blocks_find(struct fts_lmdb_db *db, uint32_t box_id,
			 uint32_t block_count,
			 const unsigned char *q, size_t q_size,
			 enum fts_lmdb_match match,
			 fts_lmdb_block_entry_callback_t *callback,
			 void *context, bool *chain_checked_r,
			 const char **error_r);

/* New postings of a batch, for tokens sorted and distinct. */
struct fts_lmdb_blocks_input {
	unsigned int count;
	void (*token)(void *context, unsigned int idx,
		      const unsigned char **token_r, size_t *size_r);
	/* appends the token's postings after hdr->last_uid to postings */
	void (*append)(void *context, unsigned int idx, buffer_t *postings,
		       struct fts_lmdb_posting_header *hdr);
	void *context;
};

/* Adds the input's postings, in the open write transaction, and keeps
   the trigram filter of a mailbox of grams_min_blocks blocks or more
   (fts-lmdb-grams.h). */
int fts_lmdb_blocks_add(struct fts_lmdb_db *db, uint32_t box_id,
			uint32_t *block_count, uint32_t grams_min_blocks,
			const struct fts_lmdb_blocks_input *input,
			const char **error_r);

/* Removes the UIDs in expunged from every list the blocks hold or name,
   and the tokens left with none. */
int fts_lmdb_blocks_purge(struct fts_lmdb_db *db, uint32_t box_id,
			  uint32_t block_count,
			  const ARRAY_TYPE(seq_range) *expunged,
			  const char **error_r);

#endif
