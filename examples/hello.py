import os

import hgsmi

host = hgsmi.Host("hello")                               # owns the VRAM segments and the socket
host.register(0x10, lambda msg: bytes(msg.data).upper())  # a channel handler (a "driver")
pid = os.fork()
if pid == 0:                                              # the guest: another process
    with hgsmi.Guest("hello") as guest:
        print(guest.call(0x10, 0, b"hello, vram"))        # copy mode: b'HELLO, VRAM'
        with guest.alloc(0x10, 0, 5) as buf:              # zero copy: fill the buffer in place
            buf.data[:] = b"abcde"
            print(bytes(guest.call_buffer(buf)))          # the reply, in place: b'ABCDE'
    os._exit(0)
while os.waitpid(pid, os.WNOHANG) == (0, 0):
    host.poll(0.1)                                        # serve until the guest is done
host.close()                                              # removes segments and socket
