#ifndef FTS_LMDB_BLOCK_VALUE_H
#define FTS_LMDB_BLOCK_VALUE_H

/* One token block's value, built and parsed, apart from LMDB: what
   fts-lmdb-blocks.c keeps in the blocks database, and what the unit
   tests and the fuzzer feed damaged copies of. */

#include "fts-lmdb-tokens.h"

/* A block's text and lists are at most this many bytes, so that with
   its header (at most 6 bytes and a token) and checksum it fills one
   4 KB LMDB overflow page: LMDB packs values of a quarter page or more
   badly into its leaf pages. */
#define FTS_LMDB_BLOCK_MAX (4096 - 16 - 4 - 6 - FTS_LMDB_TOKEN_MAX)

struct fts_lmdb_block_entry {
	const unsigned char *token;
	size_t size;
	/* NULL if the list is under the token's key in the tokens
	   database */
	const unsigned char *postings;
	size_t postings_size;
};

struct fts_lmdb_block {
	/* the key's token: the lowest token the block may hold */
	const unsigned char *low;
	size_t low_size;
	/* the next block's key token, unless last */
	const unsigned char *next;
	size_t next_size;
	bool last;
	uint64_t count;
	/* the decoded text, each token followed by '\n', in the buffer the
	   block was parsed into */
	const unsigned char *text, *text_end;
	const unsigned char *postings, *end;
};

struct fts_lmdb_block_iter {
	const struct fts_lmdb_block *block;
	const unsigned char *t, *p;
	uint64_t idx;
};

/* The value being built: the tokens' text, each after what it shares
   with the one before, and their lists. */
struct fts_lmdb_block_builder {
	buffer_t *prev, *text, *postings;
	unsigned int count;
};

/* LMDB's order of keys */
int fts_lmdb_token_cmp(const unsigned char *t1, size_t size1,
		       const unsigned char *t2, size_t size2);

/* Parses the value data of the block whose key is key (the token after
   prefix_size bytes of mailbox prefix), decoding its text into text,
   which block_r points to until the buffer is used again. -1 if the
   block is damaged: a range that is empty, a text that doesn't decode
   into count tokens of 1 to FTS_LMDB_TOKEN_MAX bytes without '\n'. */
int fts_lmdb_block_parse(size_t prefix_size,
			 const void *key, size_t key_size,
			 const void *data, size_t size,
			 buffer_t *text, struct fts_lmdb_block *block_r);

void fts_lmdb_block_iter_init(struct fts_lmdb_block_iter *iter,
			      const struct fts_lmdb_block *block);
/* 1 for the next entry, 0 at the end, -1 if the block's text and lists
   don't add up */
int fts_lmdb_block_iter_next(struct fts_lmdb_block_iter *iter,
			     struct fts_lmdb_block_entry *entry_r);

/* The builder's buffers are on the data stack. */
void fts_lmdb_block_builder_init(struct fts_lmdb_block_builder *b);
void fts_lmdb_block_builder_start(struct fts_lmdb_block_builder *b);
/* Whether entry still fits in FTS_LMDB_BLOCK_MAX (an empty block takes
   any entry), its list being at most 128 bytes. */
bool fts_lmdb_block_builder_fits(struct fts_lmdb_block_builder *b,
				 const struct fts_lmdb_block_entry *entry);
/* Entries go in ascending token order. */
void fts_lmdb_block_builder_add(struct fts_lmdb_block_builder *b,
				const struct fts_lmdb_block_entry *entry);
/* The value into value, naming next as the next block's key token
   unless last. */
void fts_lmdb_block_builder_finish(struct fts_lmdb_block_builder *b,
				   const unsigned char *next,
				   size_t next_size, bool last,
				   buffer_t *value);

#endif
