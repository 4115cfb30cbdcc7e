/* Mirrors the order in which lib-mail's message-search and
   lib-storage's index-search see a message, since every difference
   would be a wrong answer:
   - BODY: the decoded body of each text/ or message/ part, one stream
     per part; multipart preambles and epilogues are not searched.
   - TEXT: per part, "name" ": " "value" CRLF for each header (name and
     value decoded and normalized) and the body as above.
   - HEADER, SUBJECT: the decoded value of each top-level header line.
   - FROM, TO, CC, BCC: the address list parsed (missing parts filled
     in), written back, then decoded. */

#include "lib.h"
#include "buffer.h"
#include "str.h"
#include "istream.h"
#include "rfc822-parser.h"
#include "message-address.h"
#include "message-decoder.h"
#include "message-header-decode.h"
#include "message-parser.h"
#include "mail-storage.h"
#include "fts-lmdb-settings.h"
#include "fts-lmdb-extract.h"

struct fts_lmdb_extract {
	const struct fts_lmdb_settings *set;
	normalizer_func_t *normalizer;
	/* the part's TEXT/BODY stream, and one for single header values */
	struct fts_lmdb_tokenizer part_tok, value_tok;
	struct message_part *prev_part;
	bool content_type_text;
	bool in_body;
};

static void fts_lmdb_extract_content_type(struct fts_lmdb_extract *ctx,
					  struct message_header_line *hdr)
{
	struct rfc822_parser_context parser;
	string_t *content_type;

	if (hdr->continues) {
		hdr->use_full_value = TRUE;
		return;
	}
	rfc822_parser_init(&parser, hdr->full_value, hdr->full_value_len,
			   NULL);
	rfc822_skip_lwsp(&parser);
	content_type = t_str_new(64);
	(void)rfc822_parse_content_type(&parser, content_type);
	ctx->content_type_text =
		strncasecmp(str_c(content_type), "text/", 5) == 0 ||
		strncasecmp(str_c(content_type), "message/", 8) == 0;
	rfc822_parser_deinit(&parser);
}

static void fts_lmdb_extract_value(struct fts_lmdb_extract *ctx,
				   const unsigned char *data, size_t size,
				   uint32_t mask)
{
	ctx->value_tok.mask = mask;
	fts_lmdb_tokenize(&ctx->value_tok, data, size);
	fts_lmdb_tokenize_end(&ctx->value_tok);
}

static void
fts_lmdb_extract_top_header(struct fts_lmdb_extract *ctx,
			    const struct message_header_line *raw,
			    const struct message_header_line *decoded)
{
	struct message_address *addr;
	buffer_t *buf;
	string_t *str;
	uint32_t mask;

	mask = fts_lmdb_settings_header_mask(ctx->set, raw->name);
	if (mask == 0)
		return;
	fts_lmdb_extract_value(ctx, decoded->full_value,
			       decoded->full_value_len, mask);

	mask = fts_lmdb_settings_address_mask(ctx->set, raw->name);
	if (mask == 0)
		return;
	addr = message_address_parse(pool_datastack_create(),
				     raw->full_value, raw->full_value_len,
				     UINT_MAX,
				     MESSAGE_ADDRESS_PARSE_FLAG_FILL_MISSING);
	str = t_str_new(raw->full_value_len + 32);
	message_address_write(str, addr);
	buf = t_buffer_create(str_len(str) + 32);
	message_header_decode_utf8(str_data(str), str_len(str), buf,
				   ctx->normalizer);
	fts_lmdb_extract_value(ctx, buf->data, buf->used, mask);
}

static void fts_lmdb_extract_block(struct fts_lmdb_extract *ctx,
				   struct message_decoder_context *decoder,
				   struct message_block *raw)
{
	static const unsigned char crlf[] = { '\r', '\n' };
	struct message_header_line *hdr = raw->hdr;
	struct message_block block;

	if (raw->part != ctx->prev_part) {
		/* a new stream: nothing matches across parts */
		fts_lmdb_tokenize_end(&ctx->part_tok);
		ctx->part_tok.mask = FTS_LMDB_FIELD_HEADERS;
		ctx->in_body = FALSE;
		ctx->content_type_text = TRUE;
		message_decoder_decode_reset(decoder);
		ctx->prev_part = raw->part;
		if (hdr == NULL) {
			/* back in a multipart after a child: epilogue */
			ctx->content_type_text = FALSE;
		}
	}

	if (hdr != NULL) {
		if (hdr->name_len == 12 &&
		    strcasecmp(hdr->name, "Content-Type") == 0)
			fts_lmdb_extract_content_type(ctx, hdr);
	} else if (!ctx->content_type_text) {
		return;
	}
	if (!message_decoder_decode_next_block(decoder, raw, &block))
		return;

	if (block.hdr != NULL) {
		const struct message_header_line *dhdr = block.hdr;

		fts_lmdb_tokenize(&ctx->part_tok,
				  (const unsigned char *)dhdr->name,
				  dhdr->name_len);
		fts_lmdb_tokenize(&ctx->part_tok, dhdr->middle,
				  dhdr->middle_len);
		fts_lmdb_tokenize(&ctx->part_tok, dhdr->full_value,
				  dhdr->full_value_len);
		if (!dhdr->no_newline)
			fts_lmdb_tokenize(&ctx->part_tok, crlf, sizeof(crlf));
		if (raw->part->parent == NULL && !hdr->eoh)
			fts_lmdb_extract_top_header(ctx, hdr, dhdr);
		return;
	}
	if (!ctx->in_body) {
		/* BODY starts a stream of its own here; TEXT's stream has
		   just had the CRLF that ends the header */
		fts_lmdb_tokenize_end(&ctx->part_tok);
		ctx->part_tok.mask = FTS_LMDB_FIELD_BODY |
			FTS_LMDB_FIELD_HEADERS;
		ctx->in_body = TRUE;
	}
	fts_lmdb_tokenize(&ctx->part_tok, block.data, block.size);
}

int fts_lmdb_extract_mail(struct mail *mail,
			  const struct fts_lmdb_settings *set,
			  normalizer_func_t *normalizer,
			  fts_lmdb_token_callback_t *callback, void *context,
			  const bool *stop, const char **error_r)
{
	const struct message_parser_settings parser_set = {
		.hdr_flags = MESSAGE_HEADER_PARSER_FLAG_CLEAN_ONELINE,
	};
	struct fts_lmdb_extract ctx;
	struct message_parser_ctx *parser;
	struct message_decoder_context *decoder;
	struct message_block raw;
	struct message_part *parts;
	struct istream *input;
	const char *error;
	pool_t pool;

	if (mail_get_stream_because(mail, NULL, NULL, "fts-lmdb indexing",
				    &input) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		return -1;
	}

	pool = pool_alloconly_create("fts-lmdb extract", 1024);
	i_zero(&ctx);
	ctx.set = set;
	ctx.normalizer = normalizer;
	ctx.content_type_text = TRUE;
	fts_lmdb_tokenizer_init(&ctx.part_tok, pool, callback, context);
	fts_lmdb_tokenizer_init(&ctx.value_tok, pool, callback, context);
	ctx.part_tok.mask = FTS_LMDB_FIELD_HEADERS;

	parser = message_parser_init(pool_datastack_create(), input,
				     &parser_set);
	decoder = message_decoder_init(normalizer, 0);
	while (!*stop && message_parser_parse_next_block(parser, &raw) > 0) {
		T_BEGIN {
			fts_lmdb_extract_block(&ctx, decoder, &raw);
		} T_END;
	}
	fts_lmdb_tokenize_end(&ctx.part_tok);
	(void)message_parser_deinit_from_parts(&parser, &parts, &error);
	message_decoder_deinit(&decoder);
	pool_unref(&pool);

	if (input->stream_errno != 0) {
		*error_r = t_strdup_printf("read(%s) failed: %s",
					   i_stream_get_name(input),
					   i_stream_get_error(input));
		return -1;
	}
	return 0;
}
