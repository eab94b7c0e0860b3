/* The warm server's side of run_multiple's process backend (procpool.h has the protocol).
 *
 * The server is an interpreter started by a process's first process batch and kept for
 * its later ones (xetrack_c/run/process_worker.py --server).  It calls serve_worker_forks()
 * here, which answers the pool's requests on its control socket, forking one worker per
 * XT_SERVER_FORK request and reaping one per XT_SERVER_REAP request, and returns to Python
 * with the memory file of each XT_SERVER_LOAD request (a batch's frame: its functions to
 * import, sys.path, working directory and environment; the request also carries the
 * parent's stdout and stderr, put on fds 1 and 2), until the socket ends.  The fork goes through PyOS_BeforeFork/PyOS_AfterFork_*, as os.fork()
 * does: the interpreter's at-fork hooks run (random reseeds itself in the child, fork.c
 * quiesces and drops SQLite connections), and the child goes on as a Python process.
 *
 * A fork copies only the calling thread.  The server is a fresh interpreter, started by
 * xt_spawn (an exec: none of the parent's threads or connections), and stays single
 * threaded unless importing a batch's function started threads: it then refuses to fork
 * (EDEADLK), the pool retires it (ended once no batch uses it) and starts that
 * batch's workers as new interpreters; the next batch starts a new server. */
#include "module.h"
#include "procpool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKER_IN_FD 3  /* as procpool.c's CHILD_IN_FD */
#define WORKER_OUT_FD 4 /* as procpool.c's CHILD_OUT_FD */
#define REQUEST_FDS 3   /* descriptors a request carries at most (XT_SERVER_LOAD's) */

/* Threads of this process (entries of /proc/self/task), or -1 when that cannot be read. */
static int
thread_count(void)
{
    DIR *dir = opendir("/proc/self/task");
    struct dirent *entry;
    int count = 0;
    if (dir == NULL) {
        return -1;
    }
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] != '.') {
            count++;
        }
    }
    (void)closedir(dir);
    return count;
}

/* One request: its three ints and the descriptors it carried (-1 where none came).  The
 * message size, 0 at the end of the socket, or -1. */
static ssize_t
receive_request(int control, int32_t message[3], int fds[REQUEST_FDS])
{
    struct iovec iov = {message, 3 * sizeof(int32_t)};
    union {
        char buf[CMSG_SPACE(REQUEST_FDS * sizeof(int))];
        struct cmsghdr align;
    } space;
    struct msghdr header;
    ssize_t n;

    memset(&header, 0, sizeof(header));
    header.msg_iov = &iov;
    header.msg_iovlen = 1;
    header.msg_control = space.buf;
    header.msg_controllen = sizeof(space.buf);
    for (int i = 0; i < REQUEST_FDS; i++) {
        fds[i] = -1;
    }
    do {
        n = recvmsg(control, &header, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&header) : NULL; c != NULL;
         c = CMSG_NXTHDR(&header, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int got[REQUEST_FDS] = {-1, -1, -1};
            memcpy(got, CMSG_DATA(c), (count < REQUEST_FDS ? count : REQUEST_FDS) * sizeof(int));
            for (size_t i = 0; i < REQUEST_FDS && i < count; i++) {
                if (fds[i] >= 0) {
                    (void)close(fds[i]);
                }
                fds[i] = got[i];
            }
        }
    }
    return n;
}

/* In the new worker: SIGKILL when the server dies (checked against a server that died
 * before the prctl), a process group of its own, its pipe ends on fds 3 and 4 and the
 * control socket closed.  0, or -1: the worker must exit. */
static int
enter_worker(pid_t server, int control, int in_fd, int out_fd)
{
    int in_high, out_high;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || getppid() != server) {
        return -1;
    }
    if (setpgid(0, 0) != 0 && errno != EACCES && errno != EPERM) {
        return -1; /* EACCES/EPERM: the server's setpgid came first */
    }
    (void)close(control);
    /* Above fd 4 first, so that dup2 onto 3 and 4 never closes the other end. */
    in_high = fcntl(in_fd, F_DUPFD, WORKER_OUT_FD + 1);
    out_high = fcntl(out_fd, F_DUPFD, WORKER_OUT_FD + 1);
    (void)close(in_fd);
    (void)close(out_fd);
    if (in_high < 0 || out_high < 0 || dup2(in_high, WORKER_IN_FD) < 0
        || dup2(out_high, WORKER_OUT_FD) < 0) {
        return -1;
    }
    (void)close(in_high);
    (void)close(out_high);
    return 0;
}

/* Fork a worker on the two pipe ends (GIL held); in the parent, the answer: its pid or
 * -errno.  In the child *is_child is set and the answer is meaningless. */
static int32_t
fork_worker(pid_t server, int control, const int fds[2], int *is_child)
{
    pid_t pid;
    int saved;

    if (fds[0] < 0 || fds[1] < 0) {
        return -EBADMSG;
    }
    if (thread_count() != 1) {
        return -EDEADLK; /* a fork would copy only this thread of several */
    }
    PyOS_BeforeFork();
    pid = fork();
    saved = errno;
    if (pid == 0) {
        PyOS_AfterFork_Child();
        if (enter_worker(server, control, fds[0], fds[1]) != 0) {
            _exit(127);
        }
        *is_child = 1;
        return 0;
    }
    PyOS_AfterFork_Parent();
    if (pid < 0) {
        return -(int32_t)saved;
    }
    /* Also here, so that the group exists before the pool can signal it. */
    (void)setpgid(pid, pid);
    return (int32_t)pid;
}

PyDoc_STRVAR(serve_worker_forks__doc__,
"serve_worker_forks($module, control_fd, refuse=0, /)\n--\n\n"
"Serve run_multiple's process pool as its warm server: fork a worker per request on the\n"
"control socket `control_fd` (or, with `refuse` an errno value, answer each with\n"
"-refuse), reap one per request, until the socket ends.  Returns True\n"
"in a forked worker (its pipes on fds 3 and 4, in a process group of its own, SIGKILLed\n"
"when the server dies), False in the server when its socket ends (its parent closed it\n"
"or died), and the descriptor of a memory file holding a batch's frame when a load\n"
"request came (already answered: the caller loads the frame, closes the descriptor and\n"
"calls again).");

static PyObject *
serve_worker_forks_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    long control, refuse = 0;
    pid_t server = getpid();
    (void)module;

    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "serve_worker_forks() takes 1 or 2 arguments (control_fd, refuse=0) but "
                     "%zd were given", nargs);
        return NULL;
    }
    control = PyLong_AsLong(args[0]);
    if (control == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (nargs == 2) {
        refuse = PyLong_AsLong(args[1]);
        if (refuse == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (refuse < 0 || refuse > 4095) {
            PyErr_SetString(PyExc_ValueError, "serve_worker_forks: refuse must be an errno "
                                              "value or 0");
            return NULL;
        }
    }
    if (control < 0 || control > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "serve_worker_forks: control_fd must be a descriptor");
        return NULL;
    }
    for (;;) {
        int32_t message[3] = {0, 0, 0}, answer[2] = {0, -EINVAL};
        int fds[REQUEST_FDS], is_child = 0, status = 0;
        ssize_t n;
        pid_t reaped = -1;

        Py_BEGIN_ALLOW_THREADS
        n = receive_request((int)control, message, fds);
        Py_END_ALLOW_THREADS
        if (n != (ssize_t)(3 * sizeof(int32_t))) {
            for (int i = 0; i < REQUEST_FDS; i++) {
                if (fds[i] >= 0) {
                    (void)close(fds[i]);
                }
            }
            Py_RETURN_FALSE; /* the parent closed its end, or died */
        }
        if (message[0] == XT_SERVER_LOAD && fds[0] >= 0) {
            int frame = fds[0];
            answer[0] = message[2];
            answer[1] = 0;
            /* The parent's stdout and stderr as they are now: the forks write there. */
            for (int i = 1; i < REQUEST_FDS; i++) {
                if (fds[i] >= 0) {
                    (void)dup2(fds[i], i);
                    (void)close(fds[i]);
                }
            }
            do {
                n = send((int)control, answer, sizeof(answer), MSG_NOSIGNAL);
            } while (n < 0 && errno == EINTR);
            if (n != (ssize_t)sizeof(answer)) {
                (void)close(frame);
                Py_RETURN_FALSE;
            }
            return PyLong_FromLong(frame);
        }
        if (message[0] == XT_SERVER_FORK) {
            answer[1] = refuse != 0 ? -(int32_t)refuse
                                    : fork_worker(server, (int)control, fds, &is_child);
            if (is_child) {
                Py_RETURN_TRUE;
            }
        }
        else if (message[0] == XT_SERVER_REAP && message[1] > 0) {
            Py_BEGIN_ALLOW_THREADS
            do {
                reaped = waitpid((pid_t)message[1], &status, 0);
            } while (reaped < 0 && errno == EINTR);
            Py_END_ALLOW_THREADS
            answer[1] = reaped == (pid_t)message[1] ? (int32_t)status : -ECHILD;
        }
        for (int i = 0; i < REQUEST_FDS; i++) {
            if (fds[i] >= 0) {
                (void)close(fds[i]);
            }
        }
        answer[0] = message[2]; /* the request's sequence number */
        do {
            n = send((int)control, answer, sizeof(answer), MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n != (ssize_t)sizeof(answer)) {
            Py_RETURN_FALSE;
        }
    }
}

PyDoc_STRVAR(stop_process_server__doc__,
"stop_process_server($module, /)\n--\n\n"
"End this process's warm server of the process backend and reap it (at interpreter\n"
"exit); nothing when there is none, or when this process is a fork of the one that\n"
"started it.");

static PyObject *
stop_process_server_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    Py_BEGIN_ALLOW_THREADS
    xt_proc_server_shutdown();
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

PyDoc_STRVAR(forget_process_server__doc__,
"forget_process_server($module, /)\n--\n\n"
"In the child of os.fork(): forget the parent's warm server without touching it; the\n"
"child's next process batch starts a server of its own.");

static PyObject *
forget_process_server_py(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    xt_proc_server_forget();
    Py_RETURN_NONE;
}

static PyMethodDef procserver_methods[] = {
    {"serve_worker_forks", (PyCFunction)(void (*)(void))serve_worker_forks_py, METH_FASTCALL,
     serve_worker_forks__doc__},
    {"stop_process_server", stop_process_server_py, METH_NOARGS, stop_process_server__doc__},
    {"forget_process_server", forget_process_server_py, METH_NOARGS,
     forget_process_server__doc__},
    {NULL, NULL, 0, NULL},
};

int
xt_procserver_exec(PyObject *module, xt_state *st)
{
    (void)st;
    return PyModule_AddFunctions(module, procserver_methods);
}
