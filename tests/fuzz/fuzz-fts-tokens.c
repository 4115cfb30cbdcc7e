/* Fuzzes fts_lmdb's tokenizer, on the output of the normalizer that
   indexing and searching use (Dovecot's default_normalizer) or on raw
   bytes.

   Input: a flags byte (bit 0: normalize first; the rest seed the piece
   sizes the stream is fed in), a field mask byte, then the text.

   Checked:
   - the normalizer's documented behaviour: valid UTF-8 out, 0 for valid
     input and -1 for invalid;
   - the tokens are exactly what fts-lmdb-tokens.h describes: each run
     of bytes above 0x20 is one token, or, when longer than
     FTS_LMDB_TOKEN_MAX, chunks of FTS_LMDB_TOKEN_MAX bytes every
     FTS_LMDB_TOKEN_STEP bytes with the last chunk ending where the run
     ends; the mask is passed through; the pieces the stream comes in
     make no difference;
   - what exactness rests on: a key cut from the text finds the text
     through those tokens, the way fts-lmdb-lookup.c searches them (a
     key without spaces inside one token, or "maybe" through the long
     token marker; a key with spaces through the tokens around each
     space). */

/* memmem() */
#define _GNU_SOURCE
#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "unichar.h"
#include "../../plugins/fts_lmdb/fts-lmdb-tokens.h"
#include "fuzz-common.h"

#include <stdio.h>

#define FUZZ_MAX_KEYS 24
#define FUZZ_MAX_KEY_LEN (FTS_LMDB_TOKEN_MAX * 2)

struct fuzz_token {
	const unsigned char *data;
	size_t size;
	uint32_t mask;
	bool chunk;
};
ARRAY_DEFINE_TYPE(fuzz_token, struct fuzz_token);

struct fuzz_tokens {
	ARRAY_TYPE(fuzz_token) tokens;
	bool any_chunk;
};

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

static void fuzz_collect(void *context, const unsigned char *token,
			 size_t size, uint32_t mask, bool chunk)
{
	struct fuzz_tokens *tokens = context;
	struct fuzz_token *t = array_append_space(&tokens->tokens);
	unsigned char *copy;

	FUZZ_ASSERT(size > 0);
	/* the tokenizer's buffer is reused for the next token */
	copy = t_malloc_no0(size);
	memcpy(copy, token, size);
	t->data = copy;
	t->size = size;
	t->mask = mask;
	t->chunk = chunk;
	tokens->any_chunk = tokens->any_chunk || chunk;
}

static void fuzz_tokenize(const unsigned char *text, size_t size,
			  uint32_t mask, uint32_t piece_seed,
			  struct fuzz_tokens *tokens_r)
{
	struct fts_lmdb_tokenizer tok;
	pool_t pool;
	size_t pos = 0, piece;
	uint32_t state = piece_seed;

	i_zero(tokens_r);
	t_array_init(&tokens_r->tokens, 32);
	/* a pool of its own, so that a leak or an overflow of the token
	   buffer is seen */
	pool = pool_allocfree_create("fuzz tokenizer");
	fts_lmdb_tokenizer_init(&tok, pool, fuzz_collect, tokens_r);
	tok.mask = mask;
	while (pos < size) {
		/* 0 = the rest at once; else pieces of 1..64 bytes, or of
		   up to 512 so that long tokens arrive in a few pieces */
		if (piece_seed == 0)
			piece = size - pos;
		else {
			uint32_t r = fuzz_next_random(&state);

			piece = 1 + (r % ((r & 0x100) != 0 ? 512 : 64));
			piece = I_MIN(piece, size - pos);
		}
		fts_lmdb_tokenize(&tok, text + pos, piece);
		pos += piece;
	}
	fts_lmdb_tokenize_end(&tok);
	/* the end leaves it ready for the next stream */
	FUZZ_ASSERT(tok.token->used == 0 && !tok.chunked);
	buffer_free(&tok.token);
	pool_unref(&pool);
}

/* The tokens the header describes, written from its description. */
static void fuzz_expected_tokens(const unsigned char *text, size_t size,
				 uint32_t mask, struct fuzz_tokens *tokens_r)
{
	struct fuzz_token *t;
	size_t pos = 0, start, len, offset;

	i_zero(tokens_r);
	t_array_init(&tokens_r->tokens, 32);
	while (pos < size) {
		if (FTS_LMDB_IS_SPACE(text[pos])) {
			pos++;
			continue;
		}
		start = pos;
		while (pos < size && !FTS_LMDB_IS_SPACE(text[pos]))
			pos++;
		len = pos - start;
		if (len <= FTS_LMDB_TOKEN_MAX) {
			t = array_append_space(&tokens_r->tokens);
			t->data = text + start;
			t->size = len;
			t->mask = mask;
			continue;
		}
		tokens_r->any_chunk = TRUE;
		for (offset = 0; offset + FTS_LMDB_TOKEN_MAX < len;
		     offset += FTS_LMDB_TOKEN_STEP) {
			t = array_append_space(&tokens_r->tokens);
			t->data = text + start + offset;
			t->size = FTS_LMDB_TOKEN_MAX;
			t->mask = mask;
			t->chunk = TRUE;
		}
		t = array_append_space(&tokens_r->tokens);
		t->data = text + start + offset;
		t->size = len - offset;
		t->mask = mask;
		t->chunk = TRUE;
		/* what a chunk list must give: overlaps that hold any key
		   of FTS_LMDB_EXACT_MAX bytes */
		FUZZ_ASSERT(t->size > FTS_LMDB_TOKEN_MAX - FTS_LMDB_TOKEN_STEP &&
			    t->size <= FTS_LMDB_TOKEN_MAX);
	}
}

static void fuzz_assert_same_tokens(const char *what,
				    const struct fuzz_tokens *got,
				    const struct fuzz_tokens *want)
{
	const struct fuzz_token *g, *w;
	unsigned int i, count, want_count;

	g = array_get(&got->tokens, &count);
	w = array_get(&want->tokens, &want_count);
	for (i = 0; i < count && i < want_count; i++) {
		if (g[i].size != w[i].size || g[i].mask != w[i].mask ||
		    g[i].chunk != w[i].chunk ||
		    memcmp(g[i].data, w[i].data, w[i].size) != 0) {
			fuzz_fail("%s: token %u is \"%s\" (%zu bytes, chunk=%d), "
				  "expected \"%s\" (%zu bytes, chunk=%d)", what, i,
				  t_strndup(g[i].data, g[i].size), g[i].size,
				  g[i].chunk, t_strndup(w[i].data, w[i].size),
				  w[i].size, w[i].chunk);
		}
		FUZZ_ASSERT(g[i].size > 0 && g[i].size <= FTS_LMDB_TOKEN_MAX);
	}
	if (count != want_count) {
		fuzz_fail("%s: %u tokens, expected %u", what, count,
			  want_count);
	}
	FUZZ_ASSERT(got->any_chunk == want->any_chunk);
}

enum fuzz_match {
	FUZZ_MATCH_CONTAINS,
	FUZZ_MATCH_SUFFIX,
	FUZZ_MATCH_PREFIX,
	FUZZ_MATCH_EXACT,
};

static bool fuzz_token_matches(const struct fuzz_token *t,
			       const unsigned char *key, size_t size,
			       enum fuzz_match match)
{
	if (t->size < size)
		return FALSE;
	switch (match) {
	case FUZZ_MATCH_CONTAINS:
		return memmem(t->data, t->size, key, size) != NULL;
	case FUZZ_MATCH_SUFFIX:
		return memcmp(t->data + t->size - size, key, size) == 0;
	case FUZZ_MATCH_PREFIX:
		return memcmp(t->data, key, size) == 0;
	case FUZZ_MATCH_EXACT:
		return t->size == size && memcmp(t->data, key, size) == 0;
	}
	i_unreached();
}

/* Whether the index would list the message for one piece of a key:
   a token matches, or the piece is too long for a chunk and the
   message has chunked tokens (FTS_LMDB_KEY_LONG). */
static bool fuzz_piece_found(const struct fuzz_tokens *tokens,
			     const unsigned char *key, size_t size,
			     enum fuzz_match match)
{
	const struct fuzz_token *t;

	array_foreach(&tokens->tokens, t) {
		if (fuzz_token_matches(t, key, size, match))
			return TRUE;
	}
	return size > FTS_LMDB_EXACT_MAX && tokens->any_chunk;
}

/* Mirrors fts_lmdb_lookup_key(): TRUE if a message with these tokens
   is answered as definite or maybe for the (normalized) key. */
static bool fuzz_lookup(const struct fuzz_tokens *tokens,
			const unsigned char *key, size_t size)
{
	const unsigned char *p, *end = key + size, *piece;
	enum fuzz_match match;
	bool first = TRUE;

	for (p = key; p < end && !FTS_LMDB_IS_SPACE(*p); p++) ;
	if (p == end)
		return fuzz_piece_found(tokens, key, size, FUZZ_MATCH_CONTAINS);

	/* "a b c": a token ending in "a", a token "b", one starting
	   with "c" */
	for (p = key; p <= end;) {
		piece = p;
		while (p < end && !FTS_LMDB_IS_SPACE(*p))
			p++;
		match = first ? FUZZ_MATCH_SUFFIX :
			(p == end ? FUZZ_MATCH_PREFIX : FUZZ_MATCH_EXACT);
		first = FALSE;
		if (p > piece && !fuzz_piece_found(tokens, piece, p - piece,
						   match))
			return FALSE;
		if (p == end)
			break;
		while (p < end && FTS_LMDB_IS_SPACE(*p))
			p++;
	}
	return TRUE;
}

/* Keys cut from the text must find it: Dovecot's own search would. */
static void fuzz_check_keys(const unsigned char *text, size_t size,
			    const struct fuzz_tokens *tokens, uint32_t seed)
{
	uint32_t state = seed ^ 0x5bd1e995U;
	size_t start, len;
	unsigned int i;

	for (i = 0; i < FUZZ_MAX_KEYS && size > 0; i++) {
		start = fuzz_next_random(&state) % size;
		len = 1 + fuzz_next_random(&state) %
			I_MIN(FUZZ_MAX_KEY_LEN, size - start);
		if (!fuzz_lookup(tokens, text + start, len)) {
			fuzz_fail("the key \"%s\" (%zu bytes at %zu) is in the "
				  "text but the tokens don't find it",
				  t_strndup(text + start, len), len, start);
		}
	}
}

static void fuzz_fts_tokens(const uint8_t *data, size_t size)
{
	struct fuzz_reader reader;
	struct fuzz_tokens got, again, want;
	const unsigned char *text;
	buffer_t *normalized;
	uint8_t flags;
	uint32_t mask;
	size_t text_size;
	int ret;

	fuzz_reader_init(&reader, data, size);
	flags = fuzz_u8(&reader);
	mask = fuzz_u8(&reader);
	text = data + I_MIN(size, 2);
	text_size = size - I_MIN(size, 2);

	if ((flags & 1) != 0) {
		normalized = t_buffer_create(text_size * 2 + 16);
		ret = uni_utf8_to_decomposed_titlecase(text, text_size,
						       normalized);
		FUZZ_ASSERT(uni_utf8_data_is_valid(normalized->data,
						   normalized->used));
		FUZZ_ASSERT((ret == 0) == uni_utf8_data_is_valid(text, text_size));
		text = normalized->data;
		text_size = normalized->used;
	}

	fuzz_expected_tokens(text, text_size, mask, &want);
	fuzz_tokenize(text, text_size, mask, flags >> 1, &got);
	fuzz_assert_same_tokens("in pieces", &got, &want);
	if ((flags >> 1) != 0) {
		fuzz_tokenize(text, text_size, mask, 0, &again);
		fuzz_assert_same_tokens("at once", &again, &want);
	}
	fuzz_check_keys(text, text_size, &got, flags);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	T_BEGIN {
		fuzz_fts_tokens(data, size);
	} T_END;
	return 0;
}
