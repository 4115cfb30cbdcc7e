/* Unit tests of fts_lmdb's tokenizer (the chunking of long tokens that
   the exactness of lookups depends on), posting list encoding, and part
   maps: every checkpoint must restart decoding exactly where the full
   decoding is, and a damaged record must be rejected. */

/* memmem(), the reference for fts_lmdb_find() */
#define _GNU_SOURCE
#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "test-common.h"
#include "../../plugins/fts_lmdb/fts-lmdb-tokens.h"
#include "../../plugins/fts_lmdb/fts-lmdb-postings.h"
#include "../../plugins/fts_lmdb/fts-lmdb-partmap.h"
#include "../../plugins/fts_lmdb/fts-lmdb-checksum.h"
#include "../../plugins/fts_lmdb/fts-lmdb-find.h"
#include "../../plugins/fts_lmdb/fts-lmdb-block-value.h"
#include "../../plugins/fts_lmdb/fts-lmdb-grams-page.h"
#include "numpack.h"
#include "base64.h"
#include "qp-decoder.h"

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

static void test_postings_mask_runs(void)
{
	struct fts_lmdb_posting_header hdr;
	struct fts_lmdb_postings_iter iter;
	buffer_t *buf = t_buffer_create(64);
	static const uint32_t masks[] = {
		FTS_LMDB_POSTINGS_FIRST_MASK, FTS_LMDB_POSTINGS_FIRST_MASK,
		2, 2, 0x10002, FTS_LMDB_POSTINGS_FIRST_MASK
	};
	uint32_t uid, mask;
	unsigned int i;

	test_begin("postings store a mask only where it changes");
	i_zero(&hdr);
	for (i = 0; i < N_ELEMENTS(masks); i++)
		fts_lmdb_postings_append(buf, &hdr, i + 1, masks[i]);
	/* six one-byte deltas; masks after the 3rd, 5th (3 bytes) and 6th */
	test_assert(buf->used == 6 + 1 + 3 + 1);
	fts_lmdb_postings_iter_init(&iter, buf->data, buf->used);
	for (i = 0; fts_lmdb_postings_iter_next(&iter, &uid, &mask); i++) {
		test_assert_idx(uid == i + 1, i);
		test_assert_idx(mask == masks[i], i);
	}
	test_assert(i == N_ELEMENTS(masks) && !iter.failed);

	/* a delta past the largest UID is damage */
	buffer_set_used_size(buf, 0);
	i_zero(&hdr);
	fts_lmdb_postings_append(buf, &hdr, 4000000000U, 1);
	fts_lmdb_postings_append(buf, &hdr, 4000000001U, 1);
	buffer_set_used_size(buf, buf->used - 1);
	buffer_append_c(buf, 0x80 | 0x7e);
	buffer_append_c(buf, 0x80 | 0x7f);
	buffer_append_c(buf, 0x80 | 0x7f);
	buffer_append_c(buf, 0x80 | 0x7f);
	buffer_append_c(buf, 0x7f);
	fts_lmdb_postings_iter_init(&iter, buf->data, buf->used);
	test_assert(fts_lmdb_postings_iter_next(&iter, &uid, &mask));
	test_assert(!fts_lmdb_postings_iter_next(&iter, &uid, &mask));
	test_assert(iter.failed);
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

/* deterministic bytes, so that a failure can be reproduced */
static void fill_random(buffer_t *buf, size_t size, unsigned int seed)
{
	uint32_t x = seed * 2654435761U + 1;
	size_t i;

	for (i = 0; i < size; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		buffer_append_c(buf, x & 0xff);
	}
}

static int decode_all(enum fts_lmdb_partmap_cte cte, const unsigned char *src,
		      size_t size, buffer_t *dest)
{
	struct qp_decoder *qp;
	const char *error;
	size_t pos;
	int ret;

	if (cte == FTS_LMDB_PARTMAP_BASE64) {
		struct base64_decoder dec;

		base64_decode_init(&dec, &base64_scheme, 0);
		ret = base64_decode_more(&dec, src, size, &pos, dest);
		if (ret >= 0 && base64_decode_finish(&dec) < 0)
			ret = -1;
		return ret < 0 ? -1 : 0;
	}
	qp = qp_decoder_init(dest);
	ret = qp_decoder_more(qp, src, size, &pos, &error);
	if (qp_decoder_finish(qp, &error) < 0)
		ret = -1;
	qp_decoder_deinit(&qp);
	return ret;
}

/* Scans enc (fed in pieces), then checks the size and that decoding from
   every checkpoint gives the tail of the full decoding. */
static void check_checkpoints(enum fts_lmdb_partmap_cte cte,
			      const buffer_t *enc, size_t piece,
			      unsigned int *checkpoints_r)
{
	ARRAY_TYPE(fts_lmdb_checkpoint) cps;
	const struct fts_lmdb_checkpoint *cp;
	struct fts_lmdb_part_scan *scan;
	buffer_t *full = t_buffer_create(enc->used), *part;
	uoff_t size;
	size_t i;
	int ret = 0;

	t_array_init(&cps, 16);
	scan = fts_lmdb_part_scan_init(cte, 100, &cps);
	for (i = 0; i < enc->used; i += piece) {
		if (fts_lmdb_part_scan_more(scan, CONST_PTR_OFFSET(enc->data, i),
					    I_MIN(piece, enc->used - i)) < 0)
			ret = -1;
	}
	if (fts_lmdb_part_scan_finish(&scan, &size) < 0)
		ret = -1;
	test_assert(ret == 0);
	test_assert(decode_all(cte, enc->data, enc->used, full) == 0);
	test_assert(size == full->used);
	array_foreach(&cps, cp) {
		part = t_buffer_create(full->used);
		test_assert(cp->encoded <= enc->used);
		test_assert(decode_all(cte, CONST_PTR_OFFSET(enc->data,
							     cp->encoded),
				       enc->used - cp->encoded, part) == 0);
		/* base64: one just before each multiple of the spacing */
		test_assert(cte != FTS_LMDB_PARTMAP_BASE64 ||
			    cp->decoded == 0 ||
			    (cp->decoded % 100 > 97 || cp->decoded % 100 == 0));
		test_assert(cte != FTS_LMDB_PARTMAP_BASE64 ||
			    cp->decoded / 100 + (cp->decoded % 100 == 0 ? 0 : 1) ==
			    (unsigned int)(cp - array_front(&cps)));
		test_assert(cp->decoded + part->used == full->used &&
			    memcmp(part->data, CONST_PTR_OFFSET(full->data,
								cp->decoded),
				   part->used) == 0);
	}
	*checkpoints_r = array_count(&cps);
}

static void test_partmap_base64(void)
{
	static const unsigned int line_lens[] = { 0, 1, 61, 75, 76 };
	buffer_t *data, *enc, *b64;
	unsigned int i, j, checkpoints;
	size_t pos;

	test_begin("partmap base64 checkpoints");
	for (i = 0; i < N_ELEMENTS(line_lens); i++) T_BEGIN {
		data = t_buffer_create(5000);
		fill_random(data, 4000 + i, i);
		b64 = t_base64_encode(0, SIZE_MAX, data->data, data->used);
		enc = t_buffer_create(b64->used * 2);
		for (pos = 0; pos < b64->used; ) {
			size_t n = line_lens[i] == 0 ? b64->used :
				I_MIN(line_lens[i], b64->used - pos);
			buffer_append(enc, CONST_PTR_OFFSET(b64->data, pos), n);
			buffer_append(enc, i % 2 == 0 ? "\r\n" : "\n",
				      i % 2 == 0 ? 2 : 1);
			pos += n;
		}
		for (j = 1; j < 200; j += 37) {
			check_checkpoints(FTS_LMDB_PARTMAP_BASE64, enc, j,
					  &checkpoints);
			test_assert(checkpoints > 10);
		}
	} T_END;
	test_end();
}

static void test_partmap_qp(void)
{
	static const char *const pieces[] = {
		"caf=E9 ", "trailing   \n", "soft=\n", "=3D", "tab\t\n",
		"plain words ", "=\r\n", "\r\n", "long line of text ", "=20\n",
	};
	buffer_t *enc;
	unsigned int i, checkpoints;
	uint32_t x = 7;

	test_begin("partmap quoted-printable checkpoints");
	enc = t_buffer_create(20000);
	for (i = 0; i < 3000; i++) {
		x ^= x << 13; x ^= x >> 17; x ^= x << 5;
		buffer_append(enc, pieces[x % N_ELEMENTS(pieces)],
			      strlen(pieces[x % N_ELEMENTS(pieces)]));
	}
	for (i = 1; i < 300; i += 61) {
		check_checkpoints(FTS_LMDB_PARTMAP_QP, enc, i, &checkpoints);
		test_assert(checkpoints > 10);
	}
	test_end();
}

static void test_partmap_invalid(void)
{
	static const struct {
		enum fts_lmdb_partmap_cte cte;
		const char *enc;
	} bad[] = {
		{ FTS_LMDB_PARTMAP_BASE64, "QUJD*REVG\n" },
		{ FTS_LMDB_PARTMAP_BASE64, "QQ=\n" },
		{ FTS_LMDB_PARTMAP_BASE64, "QUJDRA" },
		{ FTS_LMDB_PARTMAP_QP, "abc=4" },
		{ FTS_LMDB_PARTMAP_QP, "abc=ZZdef\n" },
	};
	ARRAY_TYPE(fts_lmdb_checkpoint) cps;
	struct fts_lmdb_part_scan *scan;
	uoff_t size;
	unsigned int i;
	int ret;

	test_begin("partmap invalid encodings have no map");
	t_array_init(&cps, 4);
	for (i = 0; i < N_ELEMENTS(bad); i++) {
		scan = fts_lmdb_part_scan_init(bad[i].cte, 1, &cps);
		ret = fts_lmdb_part_scan_more(scan,
			(const unsigned char *)bad[i].enc, strlen(bad[i].enc));
		if (fts_lmdb_part_scan_finish(&scan, &size) < 0)
			ret = -1;
		test_assert_idx(ret < 0, i);
	}
	test_end();
}

static void test_partmap_crlf(void)
{
	static const char *const text =
		"a\nb\r\n\r\nccc\n\r\rd\n\n\ne\rf\r\n";
	ARRAY_TYPE(fts_lmdb_checkpoint) cps;
	const struct fts_lmdb_checkpoint *cp;
	struct fts_lmdb_crlf_scan scan;
	size_t i, len = strlen(text);
	uoff_t virtual;

	test_begin("partmap CRLF offsets");
	t_array_init(&cps, 16);
	fts_lmdb_crlf_scan_init(&scan, 1, &cps);
	/* fed a byte at a time: a CR and its LF arrive apart */
	for (i = 0; i < len; i++)
		fts_lmdb_crlf_scan_more(&scan, (const void *)(text + i), 1);
	array_foreach(&cps, cp) {
		/* count as IMAP does: a bare LF is two bytes */
		virtual = 0;
		for (i = 0; i < cp->encoded; i++) {
			virtual++;
			if (text[i] == '\n' && (i == 0 || text[i-1] != '\r'))
				virtual++;
		}
		test_assert(cp->decoded == virtual);
		test_assert(cp->encoded == 0 || text[cp->encoded-1] == '\n');
	}
	test_assert(array_count(&cps) == 9);
	test_end();
}

static void test_partmap_record(void)
{
	struct fts_lmdb_mail_map map, map2;
	struct fts_lmdb_part_map *part;
	struct fts_lmdb_checkpoint cp;
	buffer_t *buf = t_buffer_create(256), *bad;
	pool_t pool = pool_datastack_create();
	const char *error;
	size_t i;

	test_begin("partmap record encoding and damage");
	fts_lmdb_mail_map_init(pool, &map);
	map.physical_size = 1000000;
	map.guid = "0123abcd";
	cp.encoded = 0; cp.decoded = 0;
	array_push_back(&map.crlf, &cp);
	cp.encoded = 70000; cp.decoded = 71000;
	array_push_back(&map.crlf, &cp);
	part = array_append_space(&map.parts);
	part->physical_pos = 500;
	part->header_size = 100;
	part->body_size = 900000;
	part->decoded_size = 650000;
	part->cte = FTS_LMDB_PARTMAP_BASE64;
	p_array_init(&part->checkpoints, pool, 4);
	cp.encoded = 0; cp.decoded = 0;
	array_push_back(&part->checkpoints, &cp);
	cp.encoded = 65536; cp.decoded = 49152;
	array_push_back(&part->checkpoints, &cp);
	fts_lmdb_mail_map_encode(&map, buf);

	test_assert(fts_lmdb_mail_map_decode(pool, buf->data, buf->used,
					     &map2, &error) == 0);
	test_assert(map2.physical_size == 1000000);
	test_assert(strcmp(map2.guid, "0123abcd") == 0);
	test_assert(array_count(&map2.crlf) == 2);
	part = array_idx_modifiable(&map2.parts, 0);
	test_assert(part->decoded_size == 650000 &&
		    array_count(&part->checkpoints) == 2);
	test_assert(fts_lmdb_mail_map_find_part(&map2, 500) == part);
	test_assert(fts_lmdb_mail_map_find_part(&map2, 501) == NULL);
	test_assert(fts_lmdb_checkpoint_find(&part->checkpoints,
					     49151)->encoded == 0);
	test_assert(fts_lmdb_checkpoint_find(&part->checkpoints,
					     49152)->encoded == 65536);

	/* every truncation is rejected */
	for (i = 0; i < buf->used; i++) {
		test_assert_idx(fts_lmdb_mail_map_decode(pool, buf->data, i,
							 &map2, &error) < 0, i);
	}
	/* a part that would lie outside the mail is rejected */
	bad = t_buffer_create(256);
	part = array_idx_modifiable(&map.parts, 0);
	part->body_size = 999901;
	fts_lmdb_mail_map_encode(&map, bad);
	test_assert(fts_lmdb_mail_map_decode(pool, bad->data, bad->used,
					     &map2, &error) < 0);
	/* changed bytes never crash; what decodes stays inside the mail */
	for (i = 0; i < buf->used * 8; i++) {
		bad = t_buffer_create(buf->used);
		buffer_append_buf(bad, buf, 0, SIZE_MAX);
		((unsigned char *)bad->data)[i / 8] ^= 1 << (i % 8);
		if (fts_lmdb_mail_map_decode(pool, bad->data, bad->used,
					     &map2, &error) == 0) {
			array_foreach_modifiable(&map2.parts, part) {
				test_assert(part->physical_pos +
					    part->header_size +
					    part->body_size <=
					    map2.physical_size);
			}
		}
	}
	test_end();
}

static void test_checksum(void)
{
	buffer_t *data;
	size_t size, split;
	uint32_t crc;

	test_begin("index value checksum (CRC32C)");
	/* the check value of the CRC-32C catalogue entry */
	test_assert(fts_lmdb_checksum(0, "123456789", 9) == 0xe3069283);
	test_assert(fts_lmdb_checksum_portable(0, "123456789", 9) == 0xe3069283);
	test_assert(fts_lmdb_checksum(0, "", 0) == 0);
	data = t_buffer_create(1024);
	fill_random(data, 1000, 7);
	for (size = 0; size <= data->used; size += 37) {
		crc = fts_lmdb_checksum(0, data->data, size);
		test_assert_idx(crc == fts_lmdb_checksum_portable(0, data->data,
								  size), size);
		/* in pieces, at any alignment */
		split = size / 3;
		test_assert_idx(crc == fts_lmdb_checksum(
			fts_lmdb_checksum(0, data->data, split),
			CONST_PTR_OFFSET(data->data, split), size - split), size);
	}
	/* long enough for the three streams, at every remainder of 3 and
	   of the word size */
	data = t_buffer_create(300 * 1024);
	fill_random(data, 300 * 1024, 11);
	for (size = 16 * 1024 - 50; size <= data->used; size += 7919) {
		crc = fts_lmdb_checksum(0, data->data, size);
		test_assert_idx(crc == fts_lmdb_checksum_portable(0, data->data,
								  size), size);
		test_assert_idx(crc == fts_lmdb_checksum(
			fts_lmdb_checksum(0, data->data, 5),
			CONST_PTR_OFFSET(data->data, 5), size - 5), size);
	}
	/* one flipped bit shows */
	crc = fts_lmdb_checksum(0, data->data, data->used);
	((unsigned char *)buffer_get_modifiable_data(data, NULL))[150000] ^= 0x10;
	test_assert(crc != fts_lmdb_checksum(0, data->data, data->used));
	test_end();
}

static void test_find(void)
{
	/* a small alphabet, so that first and last bytes often match
	   where the key doesn't */
	static const char alphabet[] = "ab\n";
	unsigned char hay[300], key[40];
	unsigned int seed = 1, round, hay_size, key_size, i, start;
	const void *expected, *got;

	test_begin("token text substring search (fts_lmdb_find)");
	for (round = 0; round < 20000; round++) {
		seed = seed * 1103515245 + 12345;
		hay_size = (seed >> 8) % sizeof(hay);
		for (i = 0; i < hay_size; i++) {
			seed = seed * 1103515245 + 12345;
			hay[i] = alphabet[(seed >> 16) % 3];
		}
		seed = seed * 1103515245 + 12345;
		key_size = (seed >> 8) % sizeof(key);
		if (round % 2 == 0 && key_size <= hay_size) {
			/* a key that is there, anywhere, the end included */
			start = (seed >> 4) % (hay_size - key_size + 1);
			memcpy(key, hay + start, key_size);
		} else {
			for (i = 0; i < key_size; i++) {
				seed = seed * 1103515245 + 12345;
				key[i] = alphabet[(seed >> 16) % 3];
			}
		}
		expected = memmem(hay, hay_size, key, key_size);
		got = fts_lmdb_find(hay, hay_size, key, key_size);
		test_assert_idx(got == expected, round);
	}
	/* only in the last bytes, after every full block of 16 */
	memset(hay, 'a', sizeof(hay));
	memcpy(hay + sizeof(hay) - 3, "xyz", 3);
	test_assert(fts_lmdb_find(hay, sizeof(hay), "xyz", 3) ==
		    hay + sizeof(hay) - 3);
	test_assert(fts_lmdb_find(hay, sizeof(hay) - 1, "xyz", 3) == NULL);
	test_end();
}

/* Tokens sharing beginnings of every length, lists in the block and
   under the token's key (every third). */
static const char *const block_tokens[] = {
	"a", "ab", "abc", "abcd", "abd", "b", "ba", "bab", "zz", NULL
};
#define BLOCK_TOKEN_COUNT 11

static void block_build(struct fts_lmdb_block_builder *b, buffer_t *tokens,
			const char *next, buffer_t *value)
{
	static const unsigned char list[3] = { 0x02, 0x04, 0x06 };
	unsigned char longest[FTS_LMDB_TOKEN_MAX];
	struct fts_lmdb_block_entry entry;
	unsigned int i;

	fts_lmdb_block_builder_start(b);
	for (i = 0; block_tokens[i] != NULL; i++) {
		i_zero(&entry);
		entry.token = (const unsigned char *)block_tokens[i];
		entry.size = strlen(block_tokens[i]);
		if (i % 3 != 2) {
			entry.postings = list;
			entry.postings_size = 1 + i % 3;
		}
		test_assert(fts_lmdb_block_builder_fits(b, &entry));
		fts_lmdb_block_builder_add(b, &entry);
		buffer_append(tokens, entry.token, entry.size);
		buffer_append_c(tokens, '\n');
	}
	/* the longest token, then one sharing all but its last byte */
	memset(longest, 'z', sizeof(longest));
	for (i = 0; i < 2; i++) {
		longest[sizeof(longest) - 1] = 'z' + i;
		i_zero(&entry);
		entry.token = longest;
		entry.size = sizeof(longest);
		entry.postings = list;
		entry.postings_size = 1;
		fts_lmdb_block_builder_add(b, &entry);
		buffer_append(tokens, longest, sizeof(longest));
		buffer_append_c(tokens, '\n');
	}
	fts_lmdb_block_builder_finish(b, (const unsigned char *)next,
				      next == NULL ? 0 : strlen(next),
				      next == NULL, value);
}

/* 0 if the block parses and its entries add up, -1 if it is rejected.
   Whatever is accepted must point inside the value and the text, with
   tokens of 1 to FTS_LMDB_TOKEN_MAX bytes and no '\n'. */
static int block_read(const void *key, size_t key_size, size_t prefix_size,
		      const void *data, size_t size, buffer_t *text)
{
	struct fts_lmdb_block block;
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	const unsigned char *start = data, *end = start + size;
	uint64_t n = 0;
	int ret;

	if (fts_lmdb_block_parse(prefix_size, key, key_size, data, size,
				 text, &block) < 0)
		return -1;
	test_assert(block.postings >= start && block.end == end);
	if (!block.last) {
		test_assert(block.next >= start &&
			    block.next + block.next_size <= end);
		test_assert(fts_lmdb_token_cmp(block.next, block.next_size,
					       block.low, block.low_size) > 0);
	}
	fts_lmdb_block_iter_init(&iter, &block);
	while ((ret = fts_lmdb_block_iter_next(&iter, &entry)) > 0) {
		test_assert(entry.size >= 1 &&
			    entry.size <= FTS_LMDB_TOKEN_MAX);
		test_assert(entry.token >= block.text &&
			    entry.token + entry.size < block.text_end);
		test_assert(memchr(entry.token, '\n', entry.size) == NULL);
		if (entry.postings != NULL) {
			test_assert(entry.postings >= block.postings &&
				    entry.postings + entry.postings_size <=
				    block.end);
		}
		n++;
	}
	if (ret < 0)
		return -1;
	test_assert(n == block.count);
	return 0;
}

static void test_block_roundtrip(void)
{
	struct fts_lmdb_block_builder b;
	struct fts_lmdb_block block;
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	buffer_t *tokens = t_buffer_create(512), *value = t_buffer_create(512);
	buffer_t *text = t_buffer_create(512);
	unsigned int i, last;

	test_begin("token block roundtrip");
	fts_lmdb_block_builder_init(&b);
	for (last = 0; last < 2; last++) {
		buffer_set_used_size(tokens, 0);
		block_build(&b, tokens, last == 1 ? NULL : "zz{", value);
		/* a key of two bytes of mailbox prefix, then the block's
		   lowest token "a" */
		test_assert(fts_lmdb_block_parse(2, "\x01\x02" "a", 3,
						 value->data, value->used,
						 text, &block) == 0);
		test_assert(block.low_size == 1 && block.low[0] == 'a');
		test_assert(block.last == (last == 1));
		if (last == 0) {
			test_assert(block.next_size == 3 &&
				    memcmp(block.next, "zz{", 3) == 0);
		}
		test_assert(block.count == BLOCK_TOKEN_COUNT);
		/* the text decodes into the tokens, each ended by '\n' */
		test_assert(text->used == tokens->used &&
			    memcmp(text->data, tokens->data, text->used) == 0);
		fts_lmdb_block_iter_init(&iter, &block);
		for (i = 0; fts_lmdb_block_iter_next(&iter, &entry) > 0; i++) {
			if (i >= N_ELEMENTS(block_tokens) - 1) {
				test_assert_idx(entry.size ==
						FTS_LMDB_TOKEN_MAX, i);
				continue;
			}
			test_assert_idx(entry.size == strlen(block_tokens[i]) &&
					memcmp(entry.token, block_tokens[i],
					       entry.size) == 0, i);
			test_assert_idx((entry.postings == NULL) ==
					(i % 3 == 2), i);
			test_assert_idx(entry.postings_size ==
					(i % 3 == 2 ? 0 : 1 + i % 3), i);
		}
		test_assert(i == BLOCK_TOKEN_COUNT);
		test_assert(fts_lmdb_block_iter_next(&iter, &entry) == 0);
	}
	/* sharing is kept to what is there: the text is smaller than the
	   tokens */
	test_assert(value->used < tokens->used);
	test_end();
}

static void test_block_split(void)
{
	struct fts_lmdb_block_builder b;
	struct fts_lmdb_block_entry entry;
	unsigned char list[128];
	buffer_t *value = t_buffer_create(8192), *text = t_buffer_create(8192);
	const char *token;
	unsigned int i;

	test_begin("token block fills FTS_LMDB_BLOCK_MAX, never more");
	memset(list, 0x02, sizeof(list));
	fts_lmdb_block_builder_init(&b);
	fts_lmdb_block_builder_start(&b);
	i_zero(&entry);
	entry.postings = list;
	entry.postings_size = sizeof(list);
	for (i = 0;; i++) {
		/* the longest lists a block keeps */
		token = t_strdup_printf("t%05u", i);
		entry.token = (const unsigned char *)token;
		entry.size = strlen(token);
		if (!fts_lmdb_block_builder_fits(&b, &entry))
			break;
		fts_lmdb_block_builder_add(&b, &entry);
	}
	/* about 133 bytes an entry: full to within one */
	test_assert(b.text->used + b.postings->used <= FTS_LMDB_BLOCK_MAX);
	test_assert(b.text->used + b.postings->used + 2 * 133 >
		    FTS_LMDB_BLOCK_MAX);
	fts_lmdb_block_builder_finish(&b, NULL, 0, TRUE, value);
	test_assert(block_read("", 0, 0, value->data, value->used, text) == 0);
	/* an empty block takes an entry of any size */
	fts_lmdb_block_builder_start(&b);
	entry.postings_size = FTS_LMDB_BLOCK_MAX;
	test_assert(fts_lmdb_block_builder_fits(&b, &entry));
	test_end();
}

/* A value from its fields: next key (NULL: last), count, text, lists. */
static const buffer_t *
block_value(const char *next, uint64_t count, const void *text_data,
	    size_t text_size, const void *lists, size_t lists_size)
{
	buffer_t *value = t_buffer_create(256);

	numpack_encode(value, next == NULL ? 0 : strlen(next) + 1);
	if (next != NULL)
		buffer_append(value, next, strlen(next));
	numpack_encode(value, count);
	numpack_encode(value, text_size);
	buffer_append(value, text_data, text_size);
	buffer_append(value, lists, lists_size);
	return value;
}

static int block_read_value(const char *low, const buffer_t *value)
{
	buffer_t *text = t_buffer_create(256);

	return block_read(low, strlen(low), 0, value->data, value->used,
			  text);
}

#define BLOCK_TEXT(text, count, ret) { text, sizeof(text) - 1, count, ret }
static const struct {
	const char *text;
	size_t size;
	unsigned int count;
	int ret;
} block_texts[] = {
	/* the first token sharing a byte with no token before it */
	BLOCK_TEXT("\x01\x01x", 1, -1),
	/* a token sharing more than the one before has */
	BLOCK_TEXT("\x00\x01x\x02\x01y", 2, -1),
	/* an empty token; the same token twice; tokens out of order */
	BLOCK_TEXT("\x00\x01x\x00\x00", 2, -1),
	BLOCK_TEXT("\x00\x01x\x01\x00", 2, -1),
	BLOCK_TEXT("\x00\x01x\x00\x01x", 2, -1),
	BLOCK_TEXT("\x00\x02xy\x00\x01x", 2, -1),
	BLOCK_TEXT("\x00\x02xy\x01\x00", 2, -1),
	BLOCK_TEXT("\x00\x02xy\x01\x01" "a", 2, -1),
	/* less shared than there is: not as written */
	BLOCK_TEXT("\x00\x02xy\x00\x02xz", 2, -1),
	/* "xz" and "xya", as written */
	BLOCK_TEXT("\x00\x02xy\x01\x01z", 2, 0),
	BLOCK_TEXT("\x00\x02xy\x02\x01" "a", 2, 0),
};

static void test_block_damage(void)
{
	/* two tokens "ab", "ac" (the second shares 1 byte), lists of 1 and
	   0 (under the token's key) bytes */
	static const unsigned char good_text[] = { 0, 2, 'a', 'b', 1, 1, 'c' };
	static const unsigned char good_lists[] = { 1, 0x02, 0 };
	unsigned char longest[FTS_LMDB_TOKEN_MAX + 1];
	buffer_t *t = t_buffer_create(512), *text = t_buffer_create(64);
	const buffer_t *value;
	struct fts_lmdb_block block;
	unsigned int i;

	test_begin("damaged token blocks are rejected");
#define GOOD_TEXT good_text, sizeof(good_text)
#define GOOD_LISTS good_lists, sizeof(good_lists)
	test_assert(block_read_value("a", block_value("b", 2, GOOD_TEXT,
						      GOOD_LISTS)) == 0);
	test_assert(block_read_value("", block_value(NULL, 2, GOOD_TEXT,
						     GOOD_LISTS)) == 0);
	/* a key shorter than the mailbox prefix */
	test_assert(fts_lmdb_block_parse(4, "abc", 3, "\0\0\0", 3, text,
					 &block) < 0);
	/* an empty next key; one longer than the value; one at or below
	   the block's own key (an empty range) */
	test_assert(block_read_value("a", block_value("", 2, GOOD_TEXT,
						      GOOD_LISTS)) < 0);
	test_assert(block_read_value("a", block_value("a", 2, GOOD_TEXT,
						      GOOD_LISTS)) < 0);
	test_assert(block_read_value("b", block_value("a", 2, GOOD_TEXT,
						      GOOD_LISTS)) < 0);
	test_assert(block_read_value("a", block_value("b", 2, GOOD_TEXT,
						      GOOD_LISTS)) == 0);
	test_assert(fts_lmdb_block_parse(0, "", 0, "\x05zz", 3, text,
					 &block) < 0);
	/* counts that don't match the text */
	test_assert(block_read_value("", block_value(NULL, 1, GOOD_TEXT,
						     GOOD_LISTS)) < 0);
	test_assert(block_read_value("", block_value(NULL, 3, GOOD_TEXT,
						     GOOD_LISTS)) < 0);
	test_assert(block_read_value("", block_value(NULL, 0, GOOD_TEXT,
						     GOOD_LISTS)) < 0);
	test_assert(block_read_value("", block_value(NULL, 1, "", 0,
						     GOOD_LISTS)) < 0);
	test_assert(block_read_value("", block_value(NULL, 0, "", 0,
						     "", 0)) == 0);
	/* a count that would have the text decoded into petabytes */
	test_assert(block_read_value("", block_value(NULL, (uint64_t)1 << 40,
						     GOOD_TEXT, GOOD_LISTS)) < 0);
	/* a text over FTS_LMDB_BLOCK_MAX, of tokens otherwise valid */
	buffer_set_used_size(t, 0);
	for (i = 0; i < 40; i++) {
		numpack_encode(t, 0);
		numpack_encode(t, 100);
		/* sharing nothing with the one before */
		memset(longest, 'A' + i, 100);
		buffer_append(t, longest, 100);
	}
	test_assert(t->used > FTS_LMDB_BLOCK_MAX);
	test_assert(block_read_value("", block_value(NULL, 40, t->data,
		t->used, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 40)) < 0);
	/* a text size past the value's end */
	test_assert(fts_lmdb_block_parse(0, "", 0, "\x00\x01\x09\x00\x01",
					 5, text, &block) < 0);
	/* texts of two tokens (one for the first case), each list empty */
	for (i = 0; i < N_ELEMENTS(block_texts); i++) {
		test_assert_idx(block_read_value("", block_value(NULL,
			block_texts[i].count, block_texts[i].text,
			block_texts[i].size, "\x00\x00",
			block_texts[i].count)) == block_texts[i].ret, i);
	}
	/* a token with '\n', which would split it in the scanned text
	   (rejected by the parse, before any scan of the text) */
	value = block_value(NULL, 1, "\x00\x03x\ny", 5, "\x00", 1);
	test_assert(fts_lmdb_block_parse(0, "", 0, value->data, value->used,
					 text, &block) < 0);
	/* a token over FTS_LMDB_TOKEN_MAX, whole or with what it shares */
	memset(longest, 'x', sizeof(longest));
	for (i = 0; i < 3; i++) {
		buffer_set_used_size(t, 0);
		numpack_encode(t, 0);
		numpack_encode(t, FTS_LMDB_TOKEN_MAX + (i == 0 ? 1 : 0));
		buffer_append(t, longest, FTS_LMDB_TOKEN_MAX + (i == 0 ? 1 : 0));
		if (i == 2) {
			/* all of it, and one more byte */
			numpack_encode(t, FTS_LMDB_TOKEN_MAX);
			numpack_encode(t, 1);
			buffer_append_c(t, 'y');
		}
		test_assert_idx(block_read_value("", block_value(NULL,
			i == 2 ? 2 : 1, t->data, t->used, "\x00\x00",
			i == 2 ? 2 : 1)) == (i == 1 ? 0 : -1), i);
	}
	/* text left over after count tokens */
	test_assert(block_read_value("", block_value(NULL, 1,
		"\x00\x01x\x00\x01y", 6, "\x00", 1)) < 0);
	/* lists: one past the end, one missing, bytes left after them */
	test_assert(block_read_value("", block_value(NULL, 2, GOOD_TEXT,
						     "\x01\x02\x05\x01", 4)) < 0);
	test_assert(block_read_value("", block_value(NULL, 2, GOOD_TEXT,
						     "\x01\x02", 2)) < 0);
	test_assert(block_read_value("", block_value(NULL, 2, GOOD_TEXT,
						     "\x01\x02\x00\x07", 4)) < 0);
#undef GOOD_TEXT
#undef GOOD_LISTS
	test_end();
}

/* value with bit i flipped, into copy */
static void flip_bit(buffer_t *copy, const buffer_t *value, unsigned int i)
{
	unsigned char *p;

	buffer_set_used_size(copy, 0);
	buffer_append_buf(copy, value, 0, SIZE_MAX);
	p = buffer_get_modifiable_data(copy, NULL);
	p[i / 8] ^= 1 << (i % 8);
}

static void test_block_truncated_and_flipped(void)
{
	struct fts_lmdb_block_builder b;
	buffer_t *tokens = t_buffer_create(512), *value = t_buffer_create(512);
	buffer_t *copy = t_buffer_create(512), *text = t_buffer_create(4096);
	unsigned int i, accepted = 0;

	test_begin("truncated and flipped token blocks");
	fts_lmdb_block_builder_init(&b);
	block_build(&b, tokens, "zz{", value);
	/* every cut ends inside a list or sooner: rejected */
	for (i = 0; i < value->used; i++) {
		test_assert_idx(block_read("a", 1, 0, value->data, i,
					   text) < 0, i);
	}
	/* a flipped bit is rejected, or reads as a block whose every
	   pointer is inside it (the checksum around it is what tells) */
	for (i = 0; i < value->used * 8; i++) {
		flip_bit(copy, value, i);
		if (block_read("a", 1, 0, copy->data, copy->used, text) == 0)
			accepted++;
	}
	test_assert(accepted < value->used * 8);
	test_end();
}

/* A page of the trigram filter as read back: every trigram above the
   one before, below the next page's key, with a list of prefixes that
   decodes ascending. 0, or -1 if the page or a list is rejected. */
static int grams_page_read(const unsigned char low[3], const void *data,
			   size_t size, ARRAY_TYPE(uint32_t) *grams,
			   ARRAY_TYPE(fts_lmdb_prefix) *prefixes)
{
	struct fts_lmdb_grams_page page;
	struct fts_lmdb_grams_page_iter iter;
	ARRAY_TYPE(fts_lmdb_prefix) list;
	const unsigned char *list_data;
	const uint32_t *p;
	size_t list_size;
	uint32_t gram;
	unsigned int i, count;
	bool first = TRUE;
	int ret;

	array_clear(grams);
	array_clear(prefixes);
	if (fts_lmdb_grams_page_parse(low, data, size, &page) < 0)
		return -1;
	test_assert(page.last || page.next > page.low);
	t_array_init(&list, 16);
	fts_lmdb_grams_page_iter_init(&iter, &page);
	while ((ret = fts_lmdb_grams_page_next(&iter, &gram, &list_data,
					       &list_size)) > 0) {
		test_assert(gram >= page.low && gram <= FTS_LMDB_GRAM_MAX);
		test_assert(page.last || gram < page.next);
		test_assert(first || gram > *array_idx(grams,
						       array_count(grams) - 1));
		test_assert(list_data >= (const unsigned char *)data &&
			    list_data + list_size <=
			    (const unsigned char *)data + size);
		first = FALSE;
		array_push_back(grams, &gram);
		if (fts_lmdb_grams_list_decode(list_data, list_size,
					       &list) < 0)
			return -1;
		p = array_get(&list, &count);
		test_assert(count > 0);
		for (i = 0; i < count; i++) {
			test_assert(p[i] <= FTS_LMDB_PREFIX_MAX);
			test_assert(i == 0 || p[i] > p[i - 1]);
		}
		array_append_array(prefixes, &list);
	}
	return ret < 0 ? -1 : 0;
}

static void test_grams_list_merge(void)
{
	static const uint32_t old_prefixes[] = { 1, 5, 9 };
	static const uint64_t pairs[] = {
		(7ULL << 24) | 2, (7ULL << 24) | 5, (7ULL << 24) | 0xffffff
	};
	static const uint32_t expected[] = { 1, 2, 5, 9, 0xffffff };
	ARRAY_TYPE(fts_lmdb_prefix) scratch, merged, decoded;
	buffer_t *old = t_buffer_create(16), *dest = t_buffer_create(16);
	unsigned int i;

	test_begin("trigram lists merge");
	t_array_init(&scratch, 8);
	t_array_init(&merged, 8);
	t_array_init(&decoded, 8);
	/* a list is the first prefix, then the distances */
	for (i = 0; i < N_ELEMENTS(old_prefixes); i++) {
		numpack_encode(old, i == 0 ? old_prefixes[0] :
			       old_prefixes[i] - old_prefixes[i - 1]);
	}
	test_assert(fts_lmdb_grams_list_decode(old->data, old->used,
					       &decoded) == 0);
	test_assert(array_count(&decoded) == 3 &&
		    memcmp(array_front(&decoded), old_prefixes,
			   sizeof(old_prefixes)) == 0);
	test_assert(fts_lmdb_grams_list_merge(old->data, old->used, pairs,
					      N_ELEMENTS(pairs), &scratch,
					      &merged, dest) == 0);
	test_assert(fts_lmdb_grams_list_decode(dest->data, dest->used,
					       &decoded) == 0);
	test_assert(array_count(&decoded) == N_ELEMENTS(expected) &&
		    memcmp(array_front(&decoded), expected,
			   sizeof(expected)) == 0);
	/* no old list */
	buffer_set_used_size(dest, 0);
	test_assert(fts_lmdb_grams_list_merge(NULL, 0, pairs, 1, &scratch,
					      &merged, dest) == 0);
	test_assert(dest->used == 1 && dest->data != NULL &&
		    ((const unsigned char *)dest->data)[0] == 2);
	/* a damaged old list */
	buffer_set_used_size(dest, 0);
	test_assert(fts_lmdb_grams_list_merge((const unsigned char *)"\x01\x00",
					      2, pairs, 1, &scratch, &merged,
					      dest) < 0);
	/* damaged lists: empty, a repeated prefix, a prefix over 24 bits
	   (alone or by distance), a number cut short */
	test_assert(fts_lmdb_grams_list_decode((const unsigned char *)"", 0,
					       &decoded) < 0);
	test_assert(fts_lmdb_grams_list_decode((const unsigned char *)"\x05\x00",
					       2, &decoded) < 0);
	buffer_set_used_size(old, 0);
	numpack_encode(old, 0x1000000);
	test_assert(fts_lmdb_grams_list_decode(old->data, old->used,
					       &decoded) < 0);
	buffer_set_used_size(old, 0);
	numpack_encode(old, 0xfffff0);
	numpack_encode(old, 0x10);
	test_assert(fts_lmdb_grams_list_decode(old->data, old->used,
					       &decoded) < 0);
	test_assert(fts_lmdb_grams_list_decode((const unsigned char *)"\x05\x80",
					       2, &decoded) < 0);
	test_end();
}

static void grams_page_build(struct fts_lmdb_grams_page_builder *b,
			     uint32_t low, uint32_t next, bool last,
			     buffer_t *value)
{
	buffer_t *list = t_buffer_create(16);
	uint32_t gram;

	fts_lmdb_grams_page_builder_start(b, low);
	/* the page's own trigram, then distances of 1 to 2^14 */
	for (gram = low; gram < low + 20000; gram += 1 + gram % 3 * 8000) {
		buffer_set_used_size(list, 0);
		numpack_encode(list, gram & 0xffff);
		numpack_encode(list, 1 + gram % 200);
		test_assert(fts_lmdb_grams_page_builder_fits(b, gram,
							     list->used));
		fts_lmdb_grams_page_builder_add(b, gram, list->data,
						list->used);
	}
	fts_lmdb_grams_page_builder_finish(b, next, last, value);
}

static void test_grams_page_roundtrip(void)
{
	static const unsigned char low[3] = { 'a', 'b', 'c' };
	struct fts_lmdb_grams_page_builder b;
	struct fts_lmdb_grams_page page;
	ARRAY_TYPE(uint32_t) grams;
	ARRAY_TYPE(fts_lmdb_prefix) prefixes;
	buffer_t *value = t_buffer_create(256), *list = t_buffer_create(16);
	uint32_t gram = fts_lmdb_gram_at(low);
	unsigned int last, n;

	test_begin("trigram page roundtrip");
	t_array_init(&grams, 16);
	t_array_init(&prefixes, 16);
	fts_lmdb_grams_page_builder_init(&b);
	for (last = 0; last < 2; last++) {
		grams_page_build(&b, gram, gram + 30000, last == 1, value);
		test_assert(fts_lmdb_grams_page_parse(low, value->data,
						      value->used, &page) == 0);
		test_assert(page.low == gram && page.last == (last == 1));
		test_assert(page.last || page.next == gram + 30000);
		test_assert(grams_page_read(low, value->data, value->used,
					    &grams, &prefixes) == 0);
		n = array_count(&grams);
		test_assert(n == b.count && n > 3);
		test_assert(*array_idx(&grams, 0) == gram);
		test_assert(array_count(&prefixes) == 2 * n);
	}
	/* a page fills FTS_LMDB_GRAMS_PAGE_MAX, never more */
	fts_lmdb_grams_page_builder_start(&b, 0);
	buffer_set_used_size(list, 0);
	buffer_append_zero(list, 100);
	for (gram = 0; fts_lmdb_grams_page_builder_fits(&b, gram, list->used);
	     gram++)
		fts_lmdb_grams_page_builder_add(&b, gram, list->data,
						list->used);
	test_assert(b.entries->used <= FTS_LMDB_GRAMS_PAGE_MAX &&
		    b.entries->used + 102 > FTS_LMDB_GRAMS_PAGE_MAX);
	fts_lmdb_grams_page_builder_start(&b, 0);
	test_assert(fts_lmdb_grams_page_builder_fits(&b, 0, 100000));
	test_end();
}

/* A page of the header given, then entries of (distance, list size,
   list bytes) */
static const buffer_t *grams_page_value(const char *header,
					size_t header_size,
					const uint64_t *entries,
					unsigned int count)
{
	buffer_t *value = t_buffer_create(64);
	unsigned int i;

	buffer_append(value, header, header_size);
	for (i = 0; i < count; i += 2) {
		numpack_encode(value, entries[i]);
		numpack_encode(value, entries[i + 1]);
		if (entries[i + 1] < 16)
			buffer_append(value, "\x01\x01\x01\x01\x01\x01\x01\x01"
				      "\x01\x01\x01\x01\x01\x01\x01\x01",
				      entries[i + 1]);
	}
	return value;
}

static void test_grams_page_damage(void)
{
	static const unsigned char low[3] = { 0, 1, 0 };
	static const unsigned char top[3] = { 0xff, 0xff, 0xf0 };
	/* distance, list size: what each page holds */
	static const uint64_t good[] = { 0, 2, 5, 1 };
	static const uint64_t repeated[] = { 0, 1, 0, 1 };
	static const uint64_t empty_list[] = { 0, 0 };
	static const uint64_t past_end[] = { 0, 100 };
	static const uint64_t at_next[] = { 0, 1, 0x100, 1 };
	static const uint64_t below_next[] = { 0, 1, 0xff, 1 };
	static const uint64_t over_max[] = { 0x10, 1 };
	ARRAY_TYPE(uint32_t) grams;
	ARRAY_TYPE(fts_lmdb_prefix) prefixes;
	const buffer_t *v;
	struct fts_lmdb_grams_page page;
	struct fts_lmdb_grams_page_iter iter;
	const unsigned char *list_data;
	size_t list_size;
	uint32_t gram;

	test_begin("damaged trigram pages are rejected");
	t_array_init(&grams, 16);
	t_array_init(&prefixes, 16);
#define PAGE(header, entries) \
	(v = grams_page_value(header, sizeof(header) - 1, entries, \
			      N_ELEMENTS(entries)), \
	 grams_page_read(low, v->data, v->used, &grams, &prefixes))
	/* next key 0x000200: the range is [0x000100, 0x000200) */
	test_assert(PAGE("\x01\x00\x02\x00", good) == 0);
	test_assert(PAGE("\x00", good) == 0);
	test_assert(array_count(&grams) == 2 &&
		    *array_idx(&grams, 1) == 0x105);
	/* a header that is neither 0 nor 1 + 3 bytes */
	test_assert(fts_lmdb_grams_page_parse(low, "", 0, &page) < 0);
	test_assert(PAGE("\x02", good) < 0);
	test_assert(fts_lmdb_grams_page_parse(low, "\x01\x00\x02", 3,
					      &page) < 0);
	/* a next key at or below the page's own: an empty range */
	test_assert(PAGE("\x01\x00\x01\x00", good) < 0);
	test_assert(PAGE("\x01\x00\x00\xff", good) < 0);
	/* a trigram twice, an empty list, a list past the end */
	test_assert(PAGE("\x00", repeated) < 0);
	test_assert(PAGE("\x00", empty_list) < 0);
	/* (by the page, not only by the list's decoding) */
	test_assert(fts_lmdb_grams_page_parse(low, v->data, v->used,
					      &page) == 0);
	fts_lmdb_grams_page_iter_init(&iter, &page);
	test_assert(fts_lmdb_grams_page_next(&iter, &gram, &list_data,
					     &list_size) < 0);
	test_assert(PAGE("\x00", past_end) < 0);
	/* a trigram at the next page's key, or just below it */
	test_assert(PAGE("\x01\x00\x02\x00", at_next) < 0);
	test_assert(PAGE("\x01\x00\x02\x00", below_next) == 0);
	/* a number cut short */
	test_assert(fts_lmdb_grams_page_parse(low, "\x00\x80", 2, &page) == 0);
	test_assert(grams_page_read(low, "\x00\x80", 2, &grams,
				    &prefixes) < 0);
	/* a trigram over 24 bits */
	v = grams_page_value("\x00", 1, over_max, N_ELEMENTS(over_max));
	test_assert(grams_page_read(top, v->data, v->used, &grams,
				    &prefixes) < 0);
#undef PAGE
	test_end();
}

static void test_grams_page_flipped(void)
{
	static const unsigned char low[3] = { 'a', 'b', 'c' };
	struct fts_lmdb_grams_page_builder b;
	ARRAY_TYPE(uint32_t) grams;
	ARRAY_TYPE(fts_lmdb_prefix) prefixes;
	buffer_t *value = t_buffer_create(256), *copy = t_buffer_create(256);
	unsigned int i, rejected = 0;

	test_begin("flipped trigram pages");
	t_array_init(&grams, 16);
	t_array_init(&prefixes, 16);
	fts_lmdb_grams_page_builder_init(&b);
	grams_page_build(&b, fts_lmdb_gram_at(low),
			 fts_lmdb_gram_at(low) + 30000, FALSE, value);
	/* rejected, or read with every invariant of grams_page_read() (the
	   checksum around the page is what tells the rest) */
	for (i = 0; i < value->used * 8; i++) {
		flip_bit(copy, value, i);
		if (grams_page_read(low, copy->data, copy->used, &grams,
				    &prefixes) < 0)
			rejected++;
	}
	test_assert(rejected > 0);
	test_end();
}

int main(void)
{
	static void (*const tests[])(void) = {
		test_tokenize_words,
		test_tokenize_long,
		test_postings_roundtrip,
		test_postings_mask_runs,
		test_postings_damage,
		test_partmap_base64,
		test_partmap_qp,
		test_partmap_invalid,
		test_partmap_crlf,
		test_partmap_record,
		test_checksum,
		test_find,
		test_block_roundtrip,
		test_block_split,
		test_block_damage,
		test_block_truncated_and_flipped,
		test_grams_list_merge,
		test_grams_page_roundtrip,
		test_grams_page_damage,
		test_grams_page_flipped,
		NULL
	};
	return test_run(tests);
}
