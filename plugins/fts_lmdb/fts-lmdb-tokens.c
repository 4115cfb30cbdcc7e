/* Splits normalized text into tokens, streaming, so that a 50 MB line
   costs a buffer of FTS_LMDB_TOKEN_MAX bytes, not 50 MB. */

#include "lib.h"
#include "buffer.h"
#include "fts-lmdb-tokens.h"

void fts_lmdb_tokenizer_init(struct fts_lmdb_tokenizer *tok, pool_t pool,
			     fts_lmdb_token_callback_t *callback,
			     void *context)
{
	i_zero(tok);
	tok->token = buffer_create_dynamic(pool, FTS_LMDB_TOKEN_MAX + 1);
	tok->callback = callback;
	tok->context = context;
}

static void fts_lmdb_token_append(struct fts_lmdb_tokenizer *tok,
				  const unsigned char *data, size_t size)
{
	size_t n;

	while (size > 0) {
		if (tok->token->used == FTS_LMDB_TOKEN_MAX) {
			/* more is coming: this chunk is complete */
			tok->callback(tok->context, tok->token->data,
				      FTS_LMDB_TOKEN_MAX, tok->mask, TRUE);
			buffer_delete(tok->token, 0, FTS_LMDB_TOKEN_STEP);
			tok->chunked = TRUE;
		}
		n = I_MIN(size, FTS_LMDB_TOKEN_MAX - tok->token->used);
		buffer_append(tok->token, data, n);
		data += n;
		size -= n;
	}
}

void fts_lmdb_tokenize_end(struct fts_lmdb_tokenizer *tok)
{
	size_t size = tok->token->used;

	if (!tok->chunked) {
		if (size > 0) {
			tok->callback(tok->context, tok->token->data, size,
				      tok->mask, FALSE);
		}
	} else if (size > FTS_LMDB_TOKEN_MAX - FTS_LMDB_TOKEN_STEP) {
		/* the tail since the last chunk, so that the token's end
		   is the end of a stored chunk */
		tok->callback(tok->context, tok->token->data, size,
			      tok->mask, TRUE);
	}
	buffer_set_used_size(tok->token, 0);
	tok->chunked = FALSE;
}

void fts_lmdb_tokenize(struct fts_lmdb_tokenizer *tok,
		       const unsigned char *data, size_t size)
{
	size_t i = 0, start;

	while (i < size) {
		if (FTS_LMDB_IS_SPACE(data[i])) {
			if (tok->token->used > 0)
				fts_lmdb_tokenize_end(tok);
			i++;
			continue;
		}
		start = i;
		while (i < size && !FTS_LMDB_IS_SPACE(data[i]))
			i++;
		fts_lmdb_token_append(tok, data + start, i - start);
	}
}
