#version 150
// Boxes drawn by instancing: one unit box, per-instance position, turn, size and colour.
uniform mat4 p3d_ModelViewProjectionMatrix;
in vec4 p3d_Vertex;
in vec3 p3d_Normal;
in vec4 i_offset;  // xyz: base centre; w: turn about z, radians
in vec4 i_scale;   // xyz: size; w: glow 0..1
in vec4 i_color;   // rgba
out vec3 v_normal;
out vec4 v_color;
out float v_glow;
out float v_up;

void main() {
    float c = cos(i_offset.w);
    float s = sin(i_offset.w);
    vec3 p = p3d_Vertex.xyz * i_scale.xyz;
    p = vec3(c * p.x - s * p.y, s * p.x + c * p.y, p.z);
    v_normal = vec3(c * p3d_Normal.x - s * p3d_Normal.y, s * p3d_Normal.x + c * p3d_Normal.y, p3d_Normal.z);
    v_color = i_color;
    v_glow = i_scale.w;
    v_up = p3d_Vertex.z;
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(p + i_offset.xyz, 1.0);
}
