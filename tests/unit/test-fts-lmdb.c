/* Unit tests of fts_lmdb's tokenizer (the chunking of long tokens that
   the exactness of lookups depends on) and posting list encoding. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "test-common.h"
#include "../../plugins/fts_lmdb/fts-lmdb-tokens.h"
#include "../../plugins/fts_lmdb/fts-lmdb-postings.h"

struct collected {
	ARRAY_TYPE(const_string) tokens;
	bool any_chunk;
	uint32_t masks;
};

static void collect(void *context, const unsigned char *token, size_t size,
		    uint32_t mask, bool chunk)
{
	struct collected *c = context;
	const char *copy = t_strndup(token, size);

	array_push_back(&c->tokens, &copy);
	c->any_chunk = c->any_chunk || chunk;
	c->masks |= mask;
}

static void tokenize_all(const char *text, size_t piece,
			 struct collected *c_r)
{
	struct fts_lmdb_tokenizer tok;
	size_t len = strlen(text), i;

	i_zero(c_r);
	t_array_init(&c_r->tokens, 16);
	fts_lmdb_tokenizer_init(&tok, pool_datastack_create(), collect, c_r);
	tok.mask = 5;
	/* feeding in small pieces must give the same tokens */
	for (i = 0; i < len; i += piece)
		fts_lmdb_tokenize(&tok, (const unsigned char *)text + i,
				  I_MIN(piece, len - i));
	fts_lmdb_tokenize_end(&tok);
}

static void test_tokenize_words(void)
{
	struct collected c;
	const char *const *tokens;
	unsigned int count;
	size_t piece;

	test_begin("tokenize words");
	for (piece = 1; piece < 8; piece++) {
		tokenize_all(" HELLO,  WORLD\r\n\tTAINT.ORG\001X ", piece, &c);
		tokens = array_get(&c.tokens, &count);
		test_assert(count == 4);
		if (count == 4) {
			test_assert(strcmp(tokens[0], "HELLO,") == 0);
			test_assert(strcmp(tokens[1], "WORLD") == 0);
			test_assert(strcmp(tokens[2], "TAINT.ORG") == 0);
			test_assert(strcmp(tokens[3], "X") == 0);
		}
		test_assert(!c.any_chunk);
		test_assert(c.masks == 5);
	}
	test_end();
}

static bool contained_in_one(const struct collected *c, const char *needle)
{
	const char *const *token;

	array_foreach(&c->tokens, token) {
		if (strstr(*token, needle) != NULL)
			return TRUE;
	}
	return FALSE;
}

static void test_tokenize_long(void)
{
	string_t *text = t_str_new(1024);
	struct collected c;
	const char *const *token;
	unsigned int len, start, n;

	test_begin("tokenize long tokens into overlapping chunks");
	for (len = FTS_LMDB_TOKEN_MAX - 1; len < 5 * FTS_LMDB_TOKEN_MAX;
	     len += 7) {
		str_truncate(text, 0);
		for (n = 0; n < len; n++)
			str_append_c(text, 'A' + (n * 7 + n / 26) % 26);
		tokenize_all(str_c(text), 13, &c);
		test_assert(c.any_chunk == (len > FTS_LMDB_TOKEN_MAX));
		array_foreach(&c.tokens, token)
			test_assert(strlen(*token) <= FTS_LMDB_TOKEN_MAX);
		/* every substring of up to FTS_LMDB_EXACT_MAX bytes is in
		   one stored chunk */
		for (start = 0; start < len; start += 3) {
			n = I_MIN(FTS_LMDB_EXACT_MAX, len - start);
			test_assert_idx(contained_in_one(&c,
				t_strndup(str_c(text) + start, n)), start);
		}
		/* the token's end is the end of a stored chunk (suffix
		   matching), and its start the start of one (prefix) */
		test_assert(str_begins(str_c(text),
			*array_idx(&c.tokens, 0)) ||
			    str_begins(*array_idx(&c.tokens, 0),
				       str_c(text)));
		token = array_back(&c.tokens);
		test_assert(strcmp(str_c(text) + len - strlen(*token),
				   *token) == 0);
	}
	test_end();
}

static void test_postings_roundtrip(void)
{
	struct fts_lmdb_posting_header hdr, hdr2;
	struct fts_lmdb_postings_iter iter;
	buffer_t *buf = t_buffer_create(64);
	static const uint32_t uids[] = { 1, 2, 3, 100, 70000, 4000000000U };
	uint32_t uid, mask;
	unsigned int i;

	test_begin("postings roundtrip");
	i_zero(&hdr);
	for (i = 0; i < N_ELEMENTS(uids); i++)
		fts_lmdb_postings_append(buf, &hdr, uids[i], i * 1000);
	test_assert(fts_lmdb_postings_header(buf->data, buf->used,
					     &hdr2) == 0);
	test_assert(hdr2.count == N_ELEMENTS(uids));
	test_assert(hdr2.last_uid == 4000000000U);
	fts_lmdb_postings_iter_init(&iter, buf->data, buf->used);
	for (i = 0; fts_lmdb_postings_iter_next(&iter, &uid, &mask); i++) {
		test_assert_idx(uid == uids[i], i);
		test_assert_idx(mask == i * 1000, i);
	}
	test_assert(i == N_ELEMENTS(uids));
	test_assert(!iter.failed);
	test_end();
}

static void test_postings_damage(void)
{
	struct fts_lmdb_posting_header hdr;
	struct fts_lmdb_postings_iter iter;
	buffer_t *buf = t_buffer_create(64);
	uint32_t uid, mask, last = 0;
	unsigned int cut;

	test_begin("postings damage is detected, never a wrong UID");
	i_zero(&hdr);
	fts_lmdb_postings_append(buf, &hdr, 300, 1);
	fts_lmdb_postings_append(buf, &hdr, 70000, 3);
	test_assert(fts_lmdb_postings_header(buf->data, buf->used - 1,
					     &hdr) < 0);
	/* truncated in the middle of a number */
	for (cut = 1; cut < buf->used; cut++) {
		fts_lmdb_postings_iter_init(&iter, buf->data, cut);
		while (fts_lmdb_postings_iter_next(&iter, &uid, &mask)) {
			test_assert(uid > last);
			last = uid;
		}
		last = 0;
	}
	/* a zero delta would repeat a UID */
	buffer_set_used_size(buf, 0);
	buffer_append_c(buf, 0);
	buffer_append_c(buf, 1);
	fts_lmdb_postings_iter_init(&iter, buf->data, buf->used);
	test_assert(!fts_lmdb_postings_iter_next(&iter, &uid, &mask));
	test_assert(iter.failed);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_tokenize_words,
		test_tokenize_long,
		test_postings_roundtrip,
		test_postings_damage,
		NULL
	};
	return test_run(tests);
}
