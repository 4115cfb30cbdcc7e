/* IMAP glue: a refused session gets a BYE with its reason, a read-only
   session gets NO [NOPERM] for STORE and EXPUNGE (which the IMAP server
   would otherwise ignore silently), and the first ID after login is
   fed to the rules. */

#include "imap-common.h"
#include "ioloop.h"
#include "imap-commands.h"
#include "imap-arg.h"
#include "access-rules-user.h"
#include "access-rules-client.h"

#include <sys/socket.h>
#include <unistd.h>

/* The plugin is one module for every process, but these symbols exist
   only in the imap binary. Weak references resolve to NULL elsewhere,
   so that the module still loads into pop3, lmtp and doveadm. */
#pragma weak imap_client_created_hook_set
#pragma weak imap_module_register
#pragma weak command_find
#pragma weak client_send_tagline
#pragma weak client_send_line
#pragma weak client_disconnect
#pragma weak client_destroy
#pragma weak client_read_args

#define ACCESS_RULES_IMAP_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, access_rules_imap_module)

/* How long a refused session waits for the client (or imap-login's TLS
   proxy) to close after the BYE; see access_rules_imap_disconnect(). */
#define ACCESS_RULES_IMAP_LINGER_MSECS 1000

struct access_rules_imap_client {
	union imap_module_context module_ctx;
	/* disconnects a session refused at login */
	struct timeout *to_refuse;
	/* reads what the client still sends after the BYE */
	struct io *io_linger;
};

struct access_rules_imap_wrapped {
	const char *name;
	command_func_t *func;
	command_func_t *orig_func;
};

static bool access_rules_cmd_readonly(struct client_command_context *cmd);
static bool access_rules_cmd_id(struct client_command_context *cmd);

static struct access_rules_imap_wrapped access_rules_imap_commands[] = {
	{ "STORE", access_rules_cmd_readonly, NULL },
	{ "UID STORE", access_rules_cmd_readonly, NULL },
	{ "EXPUNGE", access_rules_cmd_readonly, NULL },
	{ "UID EXPUNGE", access_rules_cmd_readonly, NULL },
	{ "ID", access_rules_cmd_id, NULL },
};

static imap_client_created_func_t *access_rules_next_hook_client_created;
static bool access_rules_imap_active = FALSE;

static MODULE_CONTEXT_DEFINE_INIT(access_rules_imap_module,
				  &imap_module_register);

static command_func_t *access_rules_orig_func(const char *name)
{
	unsigned int i;

	for (i = 0; i < N_ELEMENTS(access_rules_imap_commands); i++) {
		if (strcmp(access_rules_imap_commands[i].name, name) == 0)
			return access_rules_imap_commands[i].orig_func;
	}
	i_unreached();
}

static void access_rules_imap_linger_input(struct client *client)
{
	char buf[1024];
	ssize_t ret;

	do {
		ret = read(client->fd_in, buf, sizeof(buf));
	} while (ret > 0);
	if (ret == 0 || (errno != EAGAIN && errno != EINTR))
		client_destroy(client, NULL);
}

static void access_rules_imap_linger_end(struct client *client)
{
	client_destroy(client, NULL);
}

/* Over TLS, imap-login proxies between the client and this process, and
   it drops the proxy as soon as either side fails. If the process closed
   its socket right after the BYE, a command the client sent meanwhile
   would fail to reach it, and the proxy would go before forwarding the
   BYE: the client would see the connection end without a reason (seen in
   1 to 6 of 100 TLS refusals with the plugins built with ASan). So only
   the sending half is shut: the proxy forwards the BYE and closes, and
   the session ends when the peer has closed, or after a second. */
static void access_rules_imap_disconnect(struct client *client,
					 const char *reason)
{
	struct access_rules_imap_client *aclient =
		ACCESS_RULES_IMAP_CONTEXT(client);

	client_disconnect(client, reason);
	/* not a socket (imap run on stdio): end as usual */
	if (shutdown(client->fd_out, SHUT_WR) < 0)
		return;
	/* after client_disconnect() to_idle is the destroy timer; it stays
	   set, because finishing a command resets it */
	timeout_remove(&client->to_idle);
	client->to_idle = timeout_add(ACCESS_RULES_IMAP_LINGER_MSECS,
				      access_rules_imap_linger_end, client);
	/* the client's own input handler stays away once disconnected */
	io_remove(&client->io);
	aclient->io_linger = io_add(client->fd_in, IO_READ,
				    access_rules_imap_linger_input, client);
}

static void access_rules_imap_refuse(struct client *client)
{
	struct access_rules_user *auser = access_rules_user_get(client->user);
	const char *error = t_strdup_printf("[%s] %s",
		auser->refusal_is_limit ? "LIMIT" : "NOPERM", auser->refusal);

	client_send_line(client, t_strconcat("* BYE ", error, NULL));
	access_rules_imap_disconnect(client, error);
}

static bool access_rules_cmd_readonly(struct client_command_context *cmd)
{
	struct access_rules_user *auser =
		access_rules_user_get(cmd->client->user);
	const struct imap_arg *args;

	if (auser == NULL || !access_rules_user_is_readonly(auser))
		return access_rules_orig_func(cmd->name)(cmd);
	/* read the whole command line before answering it */
	if (!client_read_args(cmd, 0, 0, &args))
		return FALSE;
	client_send_tagline(cmd, t_strdup_printf("NO [NOPERM] %s",
		access_rules_user_readonly_error(auser)));
	return TRUE;
}

static void
access_rules_id_get(const struct imap_arg *args, const char **name_r,
		    const char **version_r)
{
	const struct imap_arg *list;
	const char *key, *value;

	*name_r = *version_r = NULL;
	if (!imap_arg_get_list(&args[0], &list))
		return;
	for (; !IMAP_ARG_IS_EOL(&list[0]) && !IMAP_ARG_IS_EOL(&list[1]);
	     list += 2) {
		if (!imap_arg_get_string(&list[0], &key) ||
		    !imap_arg_get_nstring(&list[1], &value))
			return;
		if (strcasecmp(key, "name") == 0 && *name_r == NULL)
			*name_r = value;
		else if (strcasecmp(key, "version") == 0 && *version_r == NULL)
			*version_r = value;
	}
}

static bool access_rules_cmd_id(struct client_command_context *cmd)
{
	struct client *client = cmd->client;
	struct access_rules_user *auser = access_rules_user_get(client->user);
	const struct imap_arg *args;
	const char *name, *version;

	if (auser == NULL || auser->client_id_used)
		return access_rules_orig_func(cmd->name)(cmd);
	/* the args stay parsed, so the real ID command reads them again */
	if (!client_read_args(cmd, 0, 0, &args))
		return FALSE;
	access_rules_id_get(args, &name, &version);
	if (!access_rules_orig_func(cmd->name)(cmd))
		return FALSE;

	access_rules_user_client_id(client->user, name, version);
	if (auser->refusal != NULL)
		access_rules_imap_refuse(client);
	return TRUE;
}

static void access_rules_imap_refuse_timeout(struct client *client)
{
	struct access_rules_imap_client *aclient =
		ACCESS_RULES_IMAP_CONTEXT(client);
	struct access_rules_user *auser = access_rules_user_get(client->user);

	timeout_remove(&aclient->to_refuse);
	access_rules_imap_disconnect(client, auser->refusal);
}

static void access_rules_imap_client_init(struct client *client)
{
	struct access_rules_imap_client *aclient =
		ACCESS_RULES_IMAP_CONTEXT(client);
	struct access_rules_user *auser = access_rules_user_get(client->user);

	aclient->module_ctx.super.init(client);
	/* the tagged OK to LOGIN is already sent by now, so the reason goes
	   in a BYE, the way IMAP servers end sessions they refuse after
	   login. The imap process handles the client's pipelined input
	   right after init and asserts that the client is still connected,
	   so the disconnect waits for the ioloop; until then the storage
	   hooks refuse every mailbox access. */
	if (auser != NULL && auser->refusal != NULL) {
		client_send_line(client, t_strdup_printf("* BYE [%s] %s",
			auser->refusal_is_limit ? "LIMIT" : "NOPERM",
			auser->refusal));
		aclient->to_refuse = timeout_add_short(0,
			access_rules_imap_refuse_timeout, client);
	}
}

static void
access_rules_imap_client_destroy(struct client *client, const char *reason)
{
	struct access_rules_imap_client *aclient =
		ACCESS_RULES_IMAP_CONTEXT(client);

	timeout_remove(&aclient->to_refuse);
	io_remove(&aclient->io_linger);
	aclient->module_ctx.super.destroy(client, reason);
}

static void access_rules_imap_client_created(struct client **clientp)
{
	struct client *client = *clientp;
	struct access_rules_imap_client *aclient;

	if (access_rules_user_get(client->user) != NULL) {
		aclient = p_new(client->pool, struct access_rules_imap_client, 1);
		aclient->module_ctx.super = client->v;
		client->v.init = access_rules_imap_client_init;
		client->v.destroy = access_rules_imap_client_destroy;
		MODULE_CONTEXT_SET(client, access_rules_imap_module, aclient);
	}
	if (access_rules_next_hook_client_created != NULL)
		access_rules_next_hook_client_created(clientp);
}

void access_rules_imap_init(void)
{
	struct command *command;
	unsigned int i;

	if (imap_client_created_hook_set == NULL)
		return;
	access_rules_imap_active = TRUE;
	access_rules_next_hook_client_created =
		imap_client_created_hook_set(access_rules_imap_client_created);
	for (i = 0; i < N_ELEMENTS(access_rules_imap_commands); i++) {
		command = command_find(access_rules_imap_commands[i].name);
		i_assert(command != NULL);
		access_rules_imap_commands[i].orig_func = command->func;
		command->func = access_rules_imap_commands[i].func;
	}
}

void access_rules_imap_deinit(void)
{
	struct command *command;
	unsigned int i;

	if (!access_rules_imap_active)
		return;
	for (i = 0; i < N_ELEMENTS(access_rules_imap_commands); i++) {
		command = command_find(access_rules_imap_commands[i].name);
		if (command != NULL)
			command->func = access_rules_imap_commands[i].orig_func;
	}
	imap_client_created_hook_set(access_rules_next_hook_client_created);
	access_rules_imap_active = FALSE;
}
