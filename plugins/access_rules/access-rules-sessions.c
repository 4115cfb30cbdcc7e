/* Session caps: counting a user's live sessions across processes. */

#include "lib.h"
#include "str.h"
#include "fd-util.h"
#include "hostpid.h"
#include "mkdir-parents.h"
#include "access-rules-sessions.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/file.h>

#define ACCESS_RULES_SESSIONS_LOCK_NAME ".lock"

struct access_rules_session_slot {
	char *path;
	int fd;
};

static unsigned int access_rules_sessions_serial = 0;

/* Returns 1 if the file belongs to a live session, 0 if it was stale
   (and is now removed), -1 on error. */
static int access_rules_sessions_check(const char *path, const char **error_r)
{
	int fd, ret;

	fd = open(path, O_RDWR);
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		*error_r = t_strdup_printf("open(%s) failed: %m", path);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		/* nobody holds it: its session ended without cleaning up */
		if (unlink(path) < 0 && errno != ENOENT) {
			*error_r = t_strdup_printf("unlink(%s) failed: %m", path);
			ret = -1;
		} else
			ret = 0;
	} else if (errno == EWOULDBLOCK)
		ret = 1;
	else {
		*error_r = t_strdup_printf("flock(%s) failed: %m", path);
		ret = -1;
	}
	i_close_fd(&fd);
	return ret;
}

static int
access_rules_sessions_count(const char *dir,
			    struct access_rules_session_counts *counts,
			    const char **error_r)
{
	struct dirent *d;
	enum access_rule_protocol protocol;
	const char *dot;
	DIR *dirp;
	int ret = 0;

	dirp = opendir(dir);
	if (dirp == NULL) {
		*error_r = t_strdup_printf("opendir(%s) failed: %m", dir);
		return -1;
	}
	while (ret == 0 && (d = readdir(dirp)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		dot = strchr(d->d_name, '.');
		if (dot == NULL ||
		    access_rule_protocol_parse(t_strdup_until(d->d_name, dot),
					       &protocol) < 0)
			continue;
		T_BEGIN {
			int live = access_rules_sessions_check(
				t_strconcat(dir, "/", d->d_name, NULL), error_r);
			if (live < 0)
				ret = -1;
			else if (live > 0) {
				counts->total++;
				counts->protocol[protocol]++;
			}
		} T_END_PASS_STR_IF(ret < 0, error_r);
	}
	if (closedir(dirp) < 0 && ret == 0) {
		*error_r = t_strdup_printf("closedir(%s) failed: %m", dir);
		ret = -1;
	}
	return ret;
}

int access_rules_sessions_register(const char *dir,
				   enum access_rule_protocol protocol,
				   struct access_rules_session_slot **slot_r,
				   struct access_rules_session_counts *counts_r,
				   const char **error_r)
{
	struct access_rules_session_slot *slot;
	const char *lock_path, *path;
	int lock_fd, fd;

	if (mkdir_parents(dir, 0700) < 0 && errno != EEXIST) {
		*error_r = t_strdup_printf("mkdir(%s) failed: %m", dir);
		return -1;
	}
	/* the directory lock makes count-then-register atomic, so that two
	   sessions starting together can't both slip under the cap */
	lock_path = t_strconcat(dir, "/"ACCESS_RULES_SESSIONS_LOCK_NAME, NULL);
	lock_fd = open(lock_path, O_RDWR | O_CREAT, 0600);
	if (lock_fd == -1) {
		*error_r = t_strdup_printf("open(%s) failed: %m", lock_path);
		return -1;
	}
	if (flock(lock_fd, LOCK_EX) < 0) {
		*error_r = t_strdup_printf("flock(%s) failed: %m", lock_path);
		i_close_fd(&lock_fd);
		return -1;
	}

	i_zero(counts_r);
	if (access_rules_sessions_count(dir, counts_r, error_r) < 0) {
		i_close_fd(&lock_fd);
		return -1;
	}

	path = t_strdup_printf("%s/%s.%s.%u", dir,
			       access_rule_protocol_to_string(protocol),
			       my_pid, ++access_rules_sessions_serial);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd == -1) {
		*error_r = t_strdup_printf("open(%s) failed: %m", path);
		i_close_fd(&lock_fd);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		*error_r = t_strdup_printf("flock(%s) failed: %m", path);
		i_close_fd(&fd);
		i_unlink(path);
		i_close_fd(&lock_fd);
		return -1;
	}
	/* a program this process runs must not keep the session alive */
	fd_close_on_exec(fd, TRUE);
	i_close_fd(&lock_fd);

	counts_r->total++;
	counts_r->protocol[protocol]++;

	slot = i_new(struct access_rules_session_slot, 1);
	slot->path = i_strdup(path);
	slot->fd = fd;
	*slot_r = slot;
	return 0;
}

void access_rules_sessions_unregister(struct access_rules_session_slot **_slot)
{
	struct access_rules_session_slot *slot = *_slot;

	if (slot == NULL)
		return;
	*_slot = NULL;
	/* unlink before closing, so that a counter never sees the file
	   unlocked while it still exists */
	i_unlink_if_exists(slot->path);
	i_close_fd(&slot->fd);
	i_free(slot->path);
	i_free(slot);
}
