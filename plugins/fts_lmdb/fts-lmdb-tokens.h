#ifndef FTS_LMDB_TOKENS_H
#define FTS_LMDB_TOKENS_H

/* A token is a maximal run of bytes above 0x20 in the normalized text
   that Dovecot's own search scans. A search key without such bytes can
   only match inside one token, so the tokens that contain the key give
   an exact answer. Tokens longer than FTS_LMDB_TOKEN_MAX are stored as
   chunks that overlap by FTS_LMDB_TOKEN_MAX - FTS_LMDB_TOKEN_STEP bytes:
   any key up to FTS_LMDB_EXACT_MAX bytes lies inside one chunk. */
#define FTS_LMDB_TOKEN_MAX 128
#define FTS_LMDB_TOKEN_STEP 64
#define FTS_LMDB_EXACT_MAX (FTS_LMDB_TOKEN_MAX - FTS_LMDB_TOKEN_STEP + 1)

#define FTS_LMDB_IS_SPACE(c) ((unsigned char)(c) <= 0x20)

/* Keys of per-message facts, kept beside the tokens. They start with
   '\n', which no token contains. */
#define FTS_LMDB_KEY_LONG "\n"		/* has chunked tokens in mask */
#define FTS_LMDB_KEY_UNINDEXED "\n\001"	/* always read the mail */
#define FTS_LMDB_KEY_ALL "\n\002"		/* every indexed message */
#define FTS_LMDB_KEY_EXPUNGED "\n\003"	/* expunged, not yet purged */

/* What a token was seen in: the body, any header of any part (both for
   TEXT), and the top-level headers that searches name. */
#define FTS_LMDB_FIELD_BODY 0x01U
#define FTS_LMDB_FIELD_HEADERS 0x02U
#define FTS_LMDB_FIELD_FIRST_HEADER_BIT 2
#define FTS_LMDB_MAX_HEADERS 15

typedef void fts_lmdb_token_callback_t(void *context,
				       const unsigned char *token, size_t size,
				       uint32_t mask, bool chunk);

struct fts_lmdb_tokenizer {
	buffer_t *token;
	uint32_t mask;
	bool chunked;

	fts_lmdb_token_callback_t *callback;
	void *context;
};

void fts_lmdb_tokenizer_init(struct fts_lmdb_tokenizer *tok, pool_t pool,
			     fts_lmdb_token_callback_t *callback,
			     void *context);
/* Feed the stream; tokens continue across calls. */
void fts_lmdb_tokenize(struct fts_lmdb_tokenizer *tok,
		       const unsigned char *data, size_t size);
/* The stream ends: the token in progress is complete. */
void fts_lmdb_tokenize_end(struct fts_lmdb_tokenizer *tok);

#endif
