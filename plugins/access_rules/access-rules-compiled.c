/* FILE.compiled: the rules' index in a file that is mapped, not parsed.

   Dovecot runs each IMAP and POP3 session in a new process, so a large
   rules file would otherwise be parsed at every login. `access-rules
   compile FILE` writes FILE.compiled (like postmap for Postfix tables);
   a login then maps it, finds the session's candidate rules by binary
   search, and parses only those rules' lines. The file records the
   identity of the text it was made from (device, inode, size, mtime), so
   an edited rules file is never judged by stale rules: it is parsed as
   text instead until it is compiled again.

   Every offset read from the file is checked against its size, so a
   damaged file is reported and ignored, never followed. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "crc32.h"
#include "str.h"
#include "safe-mkstemp.h"
#include "write-full.h"
#include "access-rules-private.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define ACCESS_RULES_COMPILED_SUFFIX ".compiled"
#define ACCESS_RULES_COMPILED_MAGIC "ARULES\r\n"
#define ACCESS_RULES_COMPILED_VERSION 1

#define ACCESS_RULES_SET_FLAG_SESSION_CAPS 0x01
#define ACCESS_RULES_SET_FLAG_CLIENT_ID 0x02

/* All integers are in the byte order of the machine that compiled the
   file; the magic's version field tells a foreign file apart. Offsets
   are from the start of the file. */
struct access_rules_compiled_header {
	char magic[8];
	uint32_t version;
	uint32_t byte_order;
	uint64_t source_dev, source_ino, source_size;
	int64_t source_mtime_sec, source_mtime_nsec;
	uint32_t file_size;
	uint32_t rule_count;
	uint32_t set_count;
	uint32_t sets_offset;
};

struct access_rules_compiled_set {
	uint32_t name;
	uint32_t flags;
	uint32_t default_action;
	uint32_t default_reason; /* 0 = none */
	uint32_t default_line;
	uint32_t rules_offset, rule_count;
	/* indexed by enum access_rules_key_type up to the groups */
	uint32_t keys_offset[ACCESS_RULES_KEY_NET];
	uint32_t keys_count[ACCESS_RULES_KEY_NET];
	uint32_t nets_offset, nets_count;
	uint32_t generic_offset, generic_count;
	/* bit b set if some network of that family has b bits */
	uint64_t net_bits4, net_bits6[3];
};

struct access_rules_compiled_rule {
	uint32_t line;
	uint32_t text;
	/* crc32 of the text: a damaged rule would otherwise parse into a
	   different valid rule and give a wrong answer */
	uint32_t text_crc;
};

/* sorted by key */
struct access_rules_compiled_key {
	uint32_t key;
	uint32_t list_offset, list_count;
};

/* sorted by family, bits, addr */
struct access_rules_compiled_net {
	uint8_t family; /* 4 or 6 */
	uint8_t bits;
	uint8_t unused[2];
	uint8_t addr[16];
	uint32_t list_offset, list_count;
};

struct access_rules_compiled {
	char *path;
	const unsigned char *data;
	size_t size;
	/* the mapped file, to tell when it was replaced or cut short */
	struct stat st;
	const struct access_rules_compiled_header *hdr;
	/* the lines parsed for the last evaluation */
	pool_t eval_pool;
};

/* --- writing --- */

struct access_rules_key_entry {
	enum access_rules_key_type type;
	const char *key;
	struct access_rules_compiled_net net;
	uint32_t rule_index;
};
ARRAY_DEFINE_TYPE(access_rules_key_entry, struct access_rules_key_entry);

struct access_rules_compile_context {
	buffer_t *buf;
	ARRAY_TYPE(access_rules_key_entry) entries;
	uint32_t rule_index;
};

/* Pads the file so that the next record is aligned for its integers. */
static void access_rules_compile_align(buffer_t *buf)
{
	buffer_append_zero(buf, (8 - buf->used % 8) % 8);
}

static uint32_t access_rules_compile_string(buffer_t *buf, const char *str)
{
	uint32_t offset = buf->used;

	buffer_append(buf, str, strlen(str) + 1);
	return offset;
}

static void access_rules_net_to_compiled(const struct access_rule_net *net,
					 struct access_rules_compiled_net *dest)
{
	i_zero(dest);
	dest->bits = net->bits;
	if (IPADDR_IS_V4(&net->ip)) {
		dest->family = 4;
		memcpy(dest->addr, &net->ip.u.ip4.s_addr, 4);
	} else {
		dest->family = 6;
		memcpy(dest->addr, net->ip.u.ip6.s6_addr, 16);
	}
}

static void
access_rules_compile_add_key(void *context, enum access_rules_key_type type,
			     const char *key, const struct access_rule_net *net)
{
	struct access_rules_compile_context *ctx = context;
	struct access_rules_key_entry *entry;

	entry = array_append_space(&ctx->entries);
	entry->type = type;
	entry->key = key;
	entry->rule_index = ctx->rule_index;
	if (net != NULL)
		access_rules_net_to_compiled(net, &entry->net);
}

static int access_rules_net_cmp(const struct access_rules_compiled_net *n1,
				const struct access_rules_compiled_net *n2)
{
	if (n1->family != n2->family)
		return n1->family < n2->family ? -1 : 1;
	if (n1->bits != n2->bits)
		return n1->bits < n2->bits ? -1 : 1;
	return memcmp(n1->addr, n2->addr, sizeof(n1->addr));
}

static int access_rules_key_entry_cmp(const struct access_rules_key_entry *e1,
				      const struct access_rules_key_entry *e2)
{
	int ret;

	if (e1->type != e2->type)
		return e1->type < e2->type ? -1 : 1;
	if (e1->type == ACCESS_RULES_KEY_NET)
		ret = access_rules_net_cmp(&e1->net, &e2->net);
	else if (e1->type == ACCESS_RULES_KEY_GENERIC)
		ret = 0;
	else
		ret = strcmp(e1->key, e2->key);
	if (ret != 0)
		return ret;
	return e1->rule_index < e2->rule_index ? -1 :
		e1->rule_index > e2->rule_index ? 1 : 0;
}

static bool access_rules_key_entry_same_key(const struct access_rules_key_entry *e1,
					    const struct access_rules_key_entry *e2)
{
	if (e1->type != e2->type)
		return FALSE;
	if (e1->type == ACCESS_RULES_KEY_NET)
		return access_rules_net_cmp(&e1->net, &e2->net) == 0;
	if (e1->type == ACCESS_RULES_KEY_GENERIC)
		return TRUE;
	return strcmp(e1->key, e2->key) == 0;
}

static void
access_rules_compile_set(struct access_rules_compile_context *ctx,
			 const struct access_rule_set *set,
			 struct access_rules_compiled_set *cset)
{
	buffer_t *buf = ctx->buf;
	const struct access_rules_key_entry *entries;
	struct access_rules_compiled_rule crule;
	struct access_rule *rule;
	ARRAY(struct access_rules_compiled_key) keys[ACCESS_RULES_KEY_NET];
	ARRAY(struct access_rules_compiled_net) nets;
	ARRAY(struct access_rules_compiled_rule) rules;
	unsigned int i, j, count, type;
	uint32_t list_offset;

	i_zero(cset);
	cset->name = access_rules_compile_string(buf, set->name);
	cset->flags = (set->has_session_caps ? ACCESS_RULES_SET_FLAG_SESSION_CAPS : 0) |
		(set->has_client_id_rules ? ACCESS_RULES_SET_FLAG_CLIENT_ID : 0);
	cset->default_action = set->default_action;
	cset->default_reason = set->default_reason == NULL ? 0 :
		access_rules_compile_string(buf, set->default_reason);
	cset->default_line = set->default_line;

	array_clear(&ctx->entries);
	array_foreach_elem(&set->rules, rule) {
		ctx->rule_index = rule->index;
		access_rules_rule_keys(rule, access_rules_compile_add_key, ctx);
	}
	array_sort(&ctx->entries, access_rules_key_entry_cmp);

	for (type = 0; type < N_ELEMENTS(keys); type++)
		t_array_init(&keys[type], 16);
	t_array_init(&nets, 16);
	entries = array_get(&ctx->entries, &count);
	for (i = 0; i < count; i = j) {
		/* one list per distinct key, its rules in ascending order */
		access_rules_compile_align(buf);
		list_offset = buf->used;
		for (j = i; j < count &&
		     access_rules_key_entry_same_key(&entries[i], &entries[j]); j++) {
			if (j == i || entries[j].rule_index != entries[j - 1].rule_index)
				buffer_append(buf, &entries[j].rule_index,
					      sizeof(uint32_t));
		}
		switch (entries[i].type) {
		case ACCESS_RULES_KEY_USER:
		case ACCESS_RULES_KEY_DOMAIN:
		case ACCESS_RULES_KEY_GROUP: {
			struct access_rules_compiled_key *key =
				array_append_space(&keys[entries[i].type]);
			key->list_offset = list_offset;
			key->list_count = (buf->used - list_offset) / sizeof(uint32_t);
			key->key = access_rules_compile_string(buf, entries[i].key);
			break;
		}
		case ACCESS_RULES_KEY_NET: {
			struct access_rules_compiled_net *net =
				array_append_space(&nets);
			*net = entries[i].net;
			net->list_offset = list_offset;
			net->list_count = (buf->used - list_offset) / sizeof(uint32_t);
			if (net->family == 4)
				cset->net_bits4 |= 1ULL << net->bits;
			else
				cset->net_bits6[net->bits / 64] |= 1ULL << (net->bits % 64);
			break;
		}
		case ACCESS_RULES_KEY_GENERIC:
			cset->generic_offset = list_offset;
			cset->generic_count = (buf->used - list_offset) / sizeof(uint32_t);
			break;
		}
	}
	for (type = 0; type < N_ELEMENTS(keys); type++) {
		access_rules_compile_align(buf);
		cset->keys_offset[type] = buf->used;
		cset->keys_count[type] = array_count(&keys[type]);
		if (cset->keys_count[type] > 0) {
			buffer_append(buf, array_front(&keys[type]),
				      array_count(&keys[type]) *
				      sizeof(struct access_rules_compiled_key));
		}
	}
	access_rules_compile_align(buf);
	cset->nets_offset = buf->used;
	cset->nets_count = array_count(&nets);
	if (cset->nets_count > 0) {
		buffer_append(buf, array_front(&nets), cset->nets_count *
			      sizeof(struct access_rules_compiled_net));
	}

	/* the texts first, then the table of fixed-size records */
	t_array_init(&rules, array_count(&set->rules));
	array_foreach_elem(&set->rules, rule) {
		crule.line = rule->line;
		crule.text = access_rules_compile_string(buf, rule->text);
		crule.text_crc = crc32_str(rule->text);
		array_push_back(&rules, &crule);
	}
	access_rules_compile_align(buf);
	cset->rules_offset = buf->used;
	cset->rule_count = array_count(&rules);
	if (cset->rule_count > 0) {
		buffer_append(buf, array_front(&rules), cset->rule_count *
			      sizeof(struct access_rules_compiled_rule));
	}
}

static const char *access_rules_compiled_path(const char *path)
{
	return t_strconcat(path, ACCESS_RULES_COMPILED_SUFFIX, NULL);
}

int access_rules_compile(const struct access_rules *rules, const char **error_r)
{
	struct access_rules_compile_context ctx;
	struct access_rules_compiled_header hdr;
	struct access_rules_compiled_set *csets;
	struct access_rule_set *set;
	const char *dest;
	string_t *temp_path;
	struct stat st;
	unsigned int i;
	int fd;

	if (rules->compiled != NULL) {
		*error_r = "already compiled";
		return -1;
	}
	if (stat(rules->path, &st) < 0) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", rules->path);
		return -1;
	}

	i_zero(&ctx);
	ctx.buf = t_buffer_create(4096 + rules->rule_count * 128);
	t_array_init(&ctx.entries, rules->rule_count + 16);
	i_zero(&hdr);
	buffer_append(ctx.buf, &hdr, sizeof(hdr));
	hdr.sets_offset = ctx.buf->used;
	hdr.set_count = array_count(&rules->sets);
	csets = t_new(struct access_rules_compiled_set, hdr.set_count);
	buffer_append_zero(ctx.buf, hdr.set_count * sizeof(*csets));
	i = 0;
	array_foreach_elem(&rules->sets, set)
		access_rules_compile_set(&ctx, set, &csets[i++]);
	if (ctx.buf->used > UINT32_MAX / 2) {
		*error_r = "the rules are too large to compile";
		return -1;
	}

	memcpy(hdr.magic, ACCESS_RULES_COMPILED_MAGIC, sizeof(hdr.magic));
	hdr.version = ACCESS_RULES_COMPILED_VERSION;
	hdr.byte_order = 0x01020304;
	hdr.source_dev = st.st_dev;
	hdr.source_ino = st.st_ino;
	hdr.source_size = st.st_size;
	hdr.source_mtime_sec = st.st_mtim.tv_sec;
	hdr.source_mtime_nsec = st.st_mtim.tv_nsec;
	hdr.file_size = ctx.buf->used;
	hdr.rule_count = rules->rule_count;
	buffer_write(ctx.buf, 0, &hdr, sizeof(hdr));
	buffer_write(ctx.buf, hdr.sets_offset, csets,
		     hdr.set_count * sizeof(*csets));

	/* written aside and renamed over, so that a login never maps a
	   half-written file */
	dest = access_rules_compiled_path(rules->path);
	temp_path = t_str_new(256);
	str_append(temp_path, dest);
	fd = safe_mkstemp(temp_path, 0644, (uid_t)-1, (gid_t)-1);
	if (fd == -1) {
		*error_r = t_strdup_printf("safe_mkstemp(%s) failed: %m", dest);
		return -1;
	}
	if (write_full(fd, ctx.buf->data, ctx.buf->used) < 0 ||
	    fdatasync(fd) < 0) {
		*error_r = t_strdup_printf("write(%s) failed: %m",
					   str_c(temp_path));
		i_close_fd(&fd);
		i_unlink(str_c(temp_path));
		return -1;
	}
	i_close_fd(&fd);
	if (rename(str_c(temp_path), dest) < 0) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   str_c(temp_path), dest);
		i_unlink(str_c(temp_path));
		return -1;
	}
	return 0;
}

/* --- reading --- */

/* Returns a pointer to count records of size at offset, or NULL if they
   don't fit in the file. */
static const void *
access_rules_compiled_get(const struct access_rules_compiled *compiled,
			  uint32_t offset, uint32_t count, size_t size)
{
	if (offset > compiled->size ||
	    (uint64_t)count * size > compiled->size - offset)
		return NULL;
	if (count > 0 && (offset % sizeof(uint32_t)) != 0)
		return NULL;
	return compiled->data + offset;
}

/* Returns the NUL-terminated string at offset, or NULL if there is
   none inside the file. */
static const char *
access_rules_compiled_string(const struct access_rules_compiled *compiled,
			     uint32_t offset)
{
	if (offset >= compiled->size ||
	    memchr(compiled->data + offset, '\0', compiled->size - offset) == NULL)
		return NULL;
	return (const char *)compiled->data + offset;
}

static const struct access_rules_compiled_set *
access_rules_compiled_find_set(const struct access_rules_compiled *compiled,
			       const char *name)
{
	const struct access_rules_compiled_set *sets;
	const char *set_name;
	uint32_t i;

	sets = access_rules_compiled_get(compiled, compiled->hdr->sets_offset,
					 compiled->hdr->set_count, sizeof(*sets));
	if (sets == NULL)
		return NULL;
	for (i = 0; i < compiled->hdr->set_count; i++) {
		set_name = access_rules_compiled_string(compiled, sets[i].name);
		if (set_name != NULL && strcmp(set_name, name) == 0)
			return &sets[i];
	}
	return NULL;
}

int access_rules_compiled_open(const char *path,
			       struct access_rules_compiled **compiled_r,
			       const char **error_r)
{
	struct access_rules_compiled *compiled;
	const struct access_rules_compiled_header *hdr;
	const char *cpath = access_rules_compiled_path(path);
	struct stat st, source_st;
	void *data;
	int fd;

	fd = open(cpath, O_RDONLY);
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		*error_r = t_strdup_printf("open(%s) failed: %m", cpath);
		return -1;
	}
	if (fstat(fd, &st) < 0 || stat(path, &source_st) < 0) {
		*error_r = t_strdup_printf("stat(%s) failed: %m", cpath);
		i_close_fd(&fd);
		return -1;
	}
	if ((uint64_t)st.st_size < sizeof(*hdr) || st.st_size > UINT32_MAX) {
		*error_r = t_strdup_printf("%s: not a compiled rules file", cpath);
		i_close_fd(&fd);
		return -1;
	}
	data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	i_close_fd(&fd);
	if (data == MAP_FAILED) {
		*error_r = t_strdup_printf("mmap(%s) failed: %m", cpath);
		return -1;
	}
	hdr = data;
	if (memcmp(hdr->magic, ACCESS_RULES_COMPILED_MAGIC,
		   sizeof(hdr->magic)) != 0 ||
	    hdr->version != ACCESS_RULES_COMPILED_VERSION ||
	    hdr->byte_order != 0x01020304 ||
	    hdr->file_size != (uint64_t)st.st_size ||
	    /* the sets have 64-bit fields; the writer aligns them */
	    hdr->sets_offset % sizeof(uint64_t) != 0) {
		*error_r = t_strdup_printf("%s: not a compiled rules file of "
			"this version (or truncated): run access-rules compile",
			cpath);
		(void)munmap(data, st.st_size);
		return -1;
	}
	if (hdr->source_dev != (uint64_t)source_st.st_dev ||
	    hdr->source_ino != (uint64_t)source_st.st_ino ||
	    hdr->source_size != (uint64_t)source_st.st_size ||
	    hdr->source_mtime_sec != source_st.st_mtim.tv_sec ||
	    hdr->source_mtime_nsec != source_st.st_mtim.tv_nsec) {
		/* the text changed since it was compiled */
		(void)munmap(data, st.st_size);
		return 0;
	}

	compiled = i_new(struct access_rules_compiled, 1);
	compiled->path = i_strdup(path);
	compiled->data = data;
	compiled->size = st.st_size;
	compiled->st = st;
	compiled->hdr = hdr;
	compiled->eval_pool = pool_alloconly_create("access rules compiled", 1024);
	*compiled_r = compiled;
	return 1;
}

bool access_rules_compiled_unchanged(const struct access_rules_compiled *compiled)
{
	struct stat st;

	if (stat(access_rules_compiled_path(compiled->path), &st) < 0)
		return FALSE;
	return st.st_ino == compiled->st.st_ino &&
		st.st_dev == compiled->st.st_dev &&
		st.st_size == compiled->st.st_size &&
		st.st_mtim.tv_sec == compiled->st.st_mtim.tv_sec &&
		st.st_mtim.tv_nsec == compiled->st.st_mtim.tv_nsec;
}

void access_rules_compiled_close(struct access_rules_compiled **_compiled)
{
	struct access_rules_compiled *compiled = *_compiled;

	if (compiled == NULL)
		return;
	*_compiled = NULL;
	if (munmap((void *)compiled->data, compiled->size) < 0)
		i_error("munmap(%s.compiled) failed: %m", compiled->path);
	pool_unref(&compiled->eval_pool);
	i_free(compiled->path);
	i_free(compiled);
}

unsigned int
access_rules_compiled_count(const struct access_rules_compiled *compiled)
{
	return compiled->hdr->rule_count;
}

unsigned int
access_rules_compiled_set_count(const struct access_rules_compiled *compiled)
{
	return compiled->hdr->set_count;
}

int access_rules_compiled_set_has_session_caps(const struct access_rules_compiled *compiled,
					       const char *ruleset)
{
	const struct access_rules_compiled_set *set =
		access_rules_compiled_find_set(compiled, ruleset);

	if (set == NULL)
		return -1;
	return (set->flags & ACCESS_RULES_SET_FLAG_SESSION_CAPS) != 0 ? 1 : 0;
}

struct access_rules_compiled_eval {
	struct access_rules_compiled *compiled;
	const struct access_rules_compiled_set *set;
	const struct access_rules_session *session;
	const struct access_rule *rule;
	const char *error;
	bool damaged;
};

/* Adds the list at offset to the cursors. Returns 0, or -1 if it
   doesn't fit in the file. */
static int
access_rules_compiled_add_list(struct access_rules_compiled_eval *ctx,
			       ARRAY_TYPE(access_rules_cursor) *cursors,
			       uint32_t offset, uint32_t count)
{
	const uint32_t *list;

	if (count == 0)
		return 0;
	list = access_rules_compiled_get(ctx->compiled, offset, count,
					 sizeof(uint32_t));
	if (list == NULL) {
		ctx->damaged = TRUE;
		return -1;
	}
	access_rules_cursor_add(cursors, list, count);
	return 0;
}

static int
access_rules_compiled_add_key(struct access_rules_compiled_eval *ctx,
			      ARRAY_TYPE(access_rules_cursor) *cursors,
			      enum access_rules_key_type type, const char *value)
{
	const struct access_rules_compiled_key *keys;
	const char *key, *lvalue;
	unsigned int left = 0, right, mid;
	int cmp;

	if (value == NULL || ctx->set->keys_count[type] == 0)
		return 0;
	keys = access_rules_compiled_get(ctx->compiled, ctx->set->keys_offset[type],
					 ctx->set->keys_count[type], sizeof(*keys));
	if (keys == NULL) {
		ctx->damaged = TRUE;
		return -1;
	}
	lvalue = t_str_lcase(value);
	right = ctx->set->keys_count[type];
	while (left < right) {
		mid = left + (right - left) / 2;
		key = access_rules_compiled_string(ctx->compiled, keys[mid].key);
		if (key == NULL) {
			ctx->damaged = TRUE;
			return -1;
		}
		cmp = strcmp(lvalue, key);
		if (cmp == 0) {
			return access_rules_compiled_add_list(ctx, cursors,
				keys[mid].list_offset, keys[mid].list_count);
		}
		if (cmp < 0)
			right = mid;
		else
			left = mid + 1;
	}
	return 0;
}

static int
access_rules_compiled_add_nets(struct access_rules_compiled_eval *ctx,
			       ARRAY_TYPE(access_rules_cursor) *cursors,
			       const struct ip_addr *ip)
{
	const struct access_rules_compiled_set *set = ctx->set;
	const struct access_rules_compiled_net *nets;
	struct access_rules_compiled_net want;
	struct ip_addr ip4;
	unsigned int bits, max_bits, i, left, right, mid;
	bool present;
	int cmp;

	if (set->nets_count == 0 || ip->family == 0)
		return 0;
	if (net_ipv6_mapped_ipv4_convert(ip, &ip4) == 0)
		ip = &ip4;
	nets = access_rules_compiled_get(ctx->compiled, set->nets_offset,
					 set->nets_count, sizeof(*nets));
	if (nets == NULL) {
		ctx->damaged = TRUE;
		return -1;
	}
	max_bits = IPADDR_IS_V4(ip) ? 32 : 128;
	for (bits = 0; bits <= max_bits; bits++) {
		present = IPADDR_IS_V4(ip) ?
			(set->net_bits4 & (1ULL << bits)) != 0 :
			(set->net_bits6[bits / 64] & (1ULL << (bits % 64))) != 0;
		if (!present)
			continue;
		/* the session's address cut to this prefix length */
		i_zero(&want);
		want.family = IPADDR_IS_V4(ip) ? 4 : 6;
		want.bits = bits;
		for (i = 0; i < bits; i++) {
			if (access_rules_ip_bit(ip, i))
				want.addr[i / 8] |= 0x80 >> (i % 8);
		}
		left = 0;
		right = set->nets_count;
		while (left < right) {
			mid = left + (right - left) / 2;
			cmp = access_rules_net_cmp(&want, &nets[mid]);
			if (cmp == 0) {
				if (access_rules_compiled_add_list(ctx, cursors,
						nets[mid].list_offset,
						nets[mid].list_count) < 0)
					return -1;
				break;
			}
			if (cmp < 0)
				right = mid;
			else
				left = mid + 1;
		}
	}
	return 0;
}

static int access_rules_compiled_match(void *context, uint32_t rule_index)
{
	struct access_rules_compiled_eval *ctx = context;
	const struct access_rules_compiled_rule *crule;
	const struct access_rule *rule;
	const char *text, *error;

	crule = rule_index >= ctx->set->rule_count ? NULL :
		access_rules_compiled_get(ctx->compiled,
			ctx->set->rules_offset + rule_index * sizeof(*crule),
			1, sizeof(*crule));
	text = crule == NULL ? NULL :
		access_rules_compiled_string(ctx->compiled, crule->text);
	if (text == NULL || crc32_str(text) != crule->text_crc) {
		ctx->damaged = TRUE;
		return -1;
	}
	if (access_rules_parse_rule_text(ctx->compiled->eval_pool,
					 ctx->compiled->path, crule->line,
					 text, &rule, &error) < 0) {
		ctx->error = error;
		ctx->damaged = TRUE;
		return -1;
	}
	if (!access_rule_match(rule, ctx->session))
		return 0;
	ctx->rule = rule;
	return 1;
}

int access_rules_compiled_evaluate(struct access_rules_compiled *compiled,
				   const char *ruleset,
				   const struct access_rules_session *session,
				   struct access_rules_decision *decision_r,
				   const char **error_r)
{
	struct access_rules_compiled_eval ctx;
	ARRAY_TYPE(access_rules_cursor) cursors;
	const char *name, *reason = NULL;
	uint32_t rule_index;
	unsigned int i;
	int ret;

	i_zero(&ctx);
	ctx.compiled = compiled;
	ctx.session = session;
	ctx.set = access_rules_compiled_find_set(compiled, ruleset);
	if (ctx.set == NULL) {
		*error_r = t_strdup_printf("no rule set \"%s\"", ruleset);
		return -1;
	}
	p_clear(compiled->eval_pool);
	name = p_strdup(compiled->eval_pool, ruleset);
	if (ctx.set->default_reason != 0) {
		reason = access_rules_compiled_string(compiled,
						      ctx.set->default_reason);
		if (reason == NULL)
			ctx.damaged = TRUE;
	}
	if (ctx.set->default_action > ACCESS_RULE_ACTION_READONLY)
		ctx.damaged = TRUE;

	t_array_init(&cursors, 8);
	ret = ctx.damaged ? -1 : 0;
	if (ret == 0)
		ret = access_rules_compiled_add_key(&ctx, &cursors,
			ACCESS_RULES_KEY_USER, session->username);
	if (ret == 0)
		ret = access_rules_compiled_add_key(&ctx, &cursors,
			ACCESS_RULES_KEY_DOMAIN,
			access_rules_user_domain(session->username));
	for (i = 0; ret == 0 && session->groups != NULL &&
		    session->groups[i] != NULL; i++) {
		ret = access_rules_compiled_add_key(&ctx, &cursors,
			ACCESS_RULES_KEY_GROUP, session->groups[i]);
	}
	if (ret == 0)
		ret = access_rules_compiled_add_nets(&ctx, &cursors,
						     &session->remote_ip);
	if (ret == 0)
		ret = access_rules_compiled_add_list(&ctx, &cursors,
			ctx.set->generic_offset, ctx.set->generic_count);
	if (ret == 0) {
		ret = access_rules_cursors_first_match(&cursors,
			access_rules_compiled_match, &ctx, &rule_index);
	}
	if (ret < 0 || ctx.damaged) {
		*error_r = t_strdup_printf("%s%s is damaged%s%s: run "
			"access-rules compile", compiled->path,
			ACCESS_RULES_COMPILED_SUFFIX,
			ctx.error == NULL ? "" : ": ",
			ctx.error == NULL ? "" : ctx.error);
		return -1;
	}

	i_zero(decision_r);
	decision_r->ruleset = name;
	decision_r->depends_on_client_id =
		(ctx.set->flags & ACCESS_RULES_SET_FLAG_CLIENT_ID) != 0;
	if (ret == 0) {
		decision_r->action = ctx.set->default_action;
		decision_r->reason = p_strdup(compiled->eval_pool, reason);
		decision_r->default_line = ctx.set->default_line;
		return 0;
	}
	access_rules_decision_from_rule(decision_r, ctx.rule);
	return 0;
}
