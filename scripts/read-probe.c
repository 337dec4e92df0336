// The bare cost of reading a paced WebSocket stream on this machine, without any client library:
// one thread, epoll and non-blocking reads, frames parsed only far enough to count the trade
// frames. Usage: read-probe PORT TOTAL. Subscribes to four instruments at the fake exchange's OKX
// endpoint (`tributary simulate`), counts TOTAL trade frames and prints the process's CPU from the
// first to the last, per frame. Compared with the reading floor of `bench ingest --rate`, which
// reads the same stream with the connectors' WebSocket client.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
}

static double now_seconds(void) {
    struct timespec time;
    clock_gettime(CLOCK_MONOTONIC, &time);
    return time.tv_sec + time.tv_nsec / 1e9;
}

static int write_all(int fd, const void *bytes, size_t length) {
    const char *at = bytes;
    while (length > 0) {
        ssize_t written = write(fd, at, length);
        if (written <= 0) return -1;
        at += written;
        length -= (size_t)written;
    }
    return 0;
}

static char buffer[1 << 20];

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: read-probe PORT TOTAL\n");
        return 2;
    }
    int port = atoi(argv[1]);
    long total = atol(argv[2]);
    if (port < 1 || port > 65535 || total < 2 || total > 100000000) {
        fprintf(stderr, "PORT must be 1-65535 and TOTAL 2-100000000\n");
        return 2;
    }
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    int fd = -1;
    for (int attempt = 0; attempt < 100; attempt++) {  // the exchange may not listen yet: up to 10 s
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&address, sizeof address) == 0) break;
        close(fd);
        fd = -1;
        usleep(100000);
    }
    if (fd < 0) {
        perror("connect");
        return 1;
    }
    char request[256];
    int length = snprintf(request, sizeof request,
                          "GET /ws/v5/public HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                          port);
    if (write_all(fd, request, (size_t)length) != 0) return 1;
    size_t held = 0;
    for (;;) {  // the upgrade's response, up to its blank line
        ssize_t got = read(fd, buffer + held, sizeof buffer - held);
        if (got <= 0) {
            fprintf(stderr, "no upgrade response\n");
            return 1;
        }
        held += (size_t)got;
        char *end = memmem(buffer, held, "\r\n\r\n", 4);
        if (end) {
            size_t head = (size_t)(end + 4 - buffer);
            if (strncmp(buffer, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "upgrade refused\n");
                return 1;
            }
            memmove(buffer, buffer + head, held - head);
            held -= head;
            break;
        }
        if (held == sizeof buffer) return 1;
    }
    const char *subscription = "{\"op\":\"subscribe\",\"args\":[{\"channel\":\"trades\",\"instId\":\"BTC-USDT\"},{\"channel\":\"trades\","
                               "\"instId\":\"ETH-USDT\"},{\"channel\":\"trades\",\"instId\":\"SOL-USDT\"},{\"channel\":\"trades\","
                               "\"instId\":\"XRP-USDT\"}]}";
    size_t size = strlen(subscription);
    unsigned char frame[512] = {0x81, 0x80 | 126, (unsigned char)(size >> 8), (unsigned char)(size & 255), 0, 0, 0, 0};
    memcpy(frame + 8, subscription, size);  // masked with a zero key, as a client must mask
    if (write_all(fd, frame, 8 + size) != 0) return 1;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int poller = epoll_create1(0);
    struct epoll_event interest = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(poller, EPOLL_CTL_ADD, fd, &interest);
    long frames = 0, wakes = 0;
    double cpu_start = 0, time_start = 0;
    while (frames < total) {
        struct epoll_event event;
        int ready = epoll_wait(poller, &event, 1, 10000);
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) {
            fprintf(stderr, "nothing for 10 s after %ld frames\n", frames);
            return 1;
        }
        wakes++;
        for (;;) {
            ssize_t got = read(fd, buffer + held, sizeof buffer - held);
            if (got == 0) {
                fprintf(stderr, "the exchange closed after %ld frames\n", frames);
                return 1;
            }
            if (got < 0) break;
            held += (size_t)got;
            if (held == sizeof buffer) break;
        }
        size_t at = 0;
        while (held - at >= 2) {
            const unsigned char *bytes = (const unsigned char *)buffer + at;
            size_t payload = bytes[1] & 127, header = 2;
            if (payload == 126) {
                if (held - at < 4) break;
                payload = (size_t)bytes[2] << 8 | bytes[3];
                header = 4;
            } else if (payload == 127) {
                if (held - at < 10) break;
                payload = 0;
                for (int i = 0; i < 8; i++) payload = payload << 8 | bytes[2 + i];
                header = 10;
            }
            if (payload > sizeof buffer - header) {
                fprintf(stderr, "a frame larger than the buffer\n");
                return 1;
            }
            if (held - at < header + payload) break;
            if ((bytes[0] & 15) == 1 && memmem(bytes + header, payload, "\"data\"", 6)) {
                frames++;
                if (frames == 1) {
                    cpu_start = cpu_seconds();
                    time_start = now_seconds();
                }
            }
            at += header + payload;
        }
        memmove(buffer, buffer + at, held - at);
        held -= at;
    }
    double cpu = cpu_seconds() - cpu_start, elapsed = now_seconds() - time_start;
    printf("read probe: %ld frames in %ld wake-ups, %.3f s of CPU over %.1f s = %.3f cores, %.1f µs a frame\n", frames - 1, wakes, cpu,
           elapsed, cpu / elapsed, cpu * 1e6 / (double)(frames - 1));
    return 0;
}
